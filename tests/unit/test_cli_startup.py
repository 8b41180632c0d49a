"""The command line starts at once: its help and `plan check` load no heavy module they do not
use. Checked by which modules a fresh interpreter imported, never by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

#: Runs `campaign ARGS...` in this interpreter, then prints the names of every module loaded.
_RUN_AND_LIST_MODULES = """
import json, sys
from campaign.interfaces.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted(sys.modules)))
"""

HEAVY_FOR_HELP = {
    "sqlalchemy",
    "jinja2",
    "starlette",
    "pydantic",
    "psycopg",
    "apscheduler",
    "css_inline",
    "uvicorn",
    "rich",
}
HEAVY_FOR_PLAN_CHECK = {"sqlalchemy", "starlette", "apscheduler", "psycopg", "uvicorn"}


def _run(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}",
        "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
    }
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES, *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    listed = done.stdout.rpartition("MODULES ")[2]
    return done, {name.split(".")[0] for name in json.loads(listed)}


def test_help_loads_no_heavy_module(tmp_path: Path) -> None:
    """`campaign --help` imports neither the engine's libraries nor the web's nor Rich."""
    done, loaded = _run("--help", tmp_path=tmp_path)
    assert "Commands:" in done.stdout, done.stderr
    assert not loaded & HEAVY_FOR_HELP


def test_subcommand_help_loads_no_heavy_module(tmp_path: Path) -> None:
    """`campaign plan check --help` is as light as the top-level help."""
    done, loaded = _run("plan", "check", "--help", tmp_path=tmp_path)
    assert "Validate the plan" in done.stdout, done.stderr
    assert not loaded & HEAVY_FOR_HELP


def test_run_help_loads_no_heavy_module(tmp_path: Path) -> None:
    """`campaign run --help` does not load the service it describes."""
    done, loaded = _run("run", "--help", tmp_path=tmp_path)
    assert "--once" in done.stdout, done.stderr
    assert not loaded & HEAVY_FOR_HELP


def test_plan_check_without_a_database_loads_no_database_or_web_module(tmp_path: Path) -> None:
    """`campaign plan check` with no database file loads the plan and the renderer only."""
    done, loaded = _run("plan", "check", tmp_path=tmp_path)
    assert ": ok: 31 steps" in done.stdout, done.stderr
    assert not loaded & HEAVY_FOR_PLAN_CHECK
    assert not (tmp_path / "absent.db").exists()
