"""`campaign users` run as an operator runs it: the first account made from a script or at a
prompt, listed, removed; bad input exits 2 naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CAMPAIGN = [sys.executable, "-m", "campaign"]
#: The commands' storage runs on both databases in tests/integration/test_console.py.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _run(
    env: dict[str, str], cwd: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAMPAIGN, "users", *args],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no terminal: the prompt reads standard input
    )


def test_users_are_added_listed_and_removed_from_the_command_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`users add --password-stdin` and the twice-asked prompt make accounts, `list` shows
    them, `remove` deletes one; a bad address or a short password exits 2."""
    added = _run(
        env,
        tmp_path,
        "add",
        "ann@example.org",
        "--password-stdin",
        stdin="correct horse battery staple\n",
    )
    assert added.returncode == 0, added.stderr
    prompted = _run(
        env,
        tmp_path,
        "add",
        "bo@example.org",
        stdin="another long password\nanother long password\n",
    )
    assert prompted.returncode == 0, prompted.stderr
    assert "Repeat the password" in prompted.stderr + prompted.stdout
    listed = _run(env, tmp_path, "list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "ann@example.org",
        "bo@example.org",
    ]
    bad = _run(env, tmp_path, "add", "not an address", "--password-stdin", stdin="x" * 20)
    assert bad.returncode == 2
    assert "EMAIL 'not an address' is not an address" in bad.stderr
    short = _run(env, tmp_path, "add", "cy@example.org", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr
    removed = _run(env, tmp_path, "remove", "bo@example.org")
    assert removed.returncode == 0, removed.stderr
    assert _run(env, tmp_path, "remove", "bo@example.org").returncode == 2
    assert "bo@example.org" not in _run(env, tmp_path, "list").stdout
