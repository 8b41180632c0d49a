"""Several processes on one database: one sender per SQLite file, any number on PostgreSQL,
migrations that run once, and a schema that must match the code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from alembic import command
from sqlalchemy import text

from campaign.storage.db import Database, _alembic_config
from tests.conftest import ROOT

CAMPAIGN = [sys.executable, "-m", "campaign"]


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_sender_on_sqlite_is_refused_naming_the_first(
    env: dict[str, str], tmp_path: Path
) -> None:
    """While a scheduler runs, `tick` on the same SQLite file stops, naming the holder's pid;
    on PostgreSQL it runs beside it (claims keep them apart)."""
    log = tmp_path / "service.log"
    with log.open("wb") as output:
        service = subprocess.Popen(
            [sys.executable, str(ROOT / "run_scheduler.py")],
            cwd=tmp_path,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT), "TICK_SECONDS": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "pass at=" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the real process to start, not for a schedule
        second = _run(env, tmp_path, *CAMPAIGN, "tick")
    finally:
        service.terminate()
        service.wait(timeout=15)
    if env["DATABASE_URL"].startswith("sqlite"):
        assert second.returncode == 1
        assert "another scheduler is already sending" in second.stderr
        assert f"pid {service.pid}" in second.stderr
    else:
        assert second.returncode == 0, second.stderr


def test_an_older_or_newer_schema_is_refused_at_start(env: dict[str, str], tmp_path: Path) -> None:
    """A database behind the code asks for `db upgrade`; one ahead of it refuses to run."""
    database = Database(env["DATABASE_URL"])
    with database.engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0002")
    older = _run(env, tmp_path, *CAMPAIGN, "tick")
    assert older.returncode == 1
    assert "older than this code: run `campaign db upgrade`" in older.stderr
    assert _run(env, tmp_path, *CAMPAIGN, "db", "upgrade").returncode == 0
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    newer = _run(env, tmp_path, sys.executable, str(ROOT / "run_scheduler.py"), "--once")
    database.dispose()
    assert newer.returncode == 1
    assert "newer than this code" in newer.stderr


def test_instances_started_together_migrate_once(env: dict[str, str], tmp_path: Path) -> None:
    """Three `db upgrade` at once on an empty database all succeed and leave one schema."""
    database = Database(env["DATABASE_URL"])
    with database.engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "base")
    database.dispose()
    environ = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen(
            [*CAMPAIGN, "db", "upgrade"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
    assert [code for code, _ in results] == [0, 0, 0], results
    database = Database(env["DATABASE_URL"])
    assert database.schema_state() == "current"
    database.dispose()
