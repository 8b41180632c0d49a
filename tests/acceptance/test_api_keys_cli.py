"""`campaign api-keys` run as an operator would (subprocesses): the token is
printed once and stored only hashed, bad names and unknown keys are exit 2 naming them, and a
revoked key is listed as such."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from campaign.storage.db import Database
from tests.conftest import ROOT

TOKEN = re.compile(r"cpk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def _campaign(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "campaign", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# The keys' storage runs on both databases in tests/integration/test_api.py; each command
# here is a process start, so these run on one.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_keys_are_shown_once_stored_hashed_listed_and_revoked(
    env: dict[str, str], tmp_path: Path
) -> None:
    """create prints the token alone on stdout; the database holds its SHA-256, never the
    secret; list shows name and id, never a token; a bad or taken name and an unknown key
    are exit 2 naming them; revoke by id works."""
    made = _campaign(env, tmp_path, "api-keys", "create", "crm-sync")
    assert made.returncode == 0, made.stderr
    match = TOKEN.fullmatch(made.stdout.strip())
    assert match is not None, made.stdout
    public_id, secret = match.groups()
    assert "shown only now" in made.stderr
    db = Database(env["DATABASE_URL"])
    with db.engine.connect() as connection:
        stored = connection.execute(text("SELECT name, public_id, secret_sha256 FROM api_keys"))
        rows = [tuple(row) for row in stored]
    db.dispose()
    assert rows == [("crm-sync", public_id, hashlib.sha256(secret.encode()).hexdigest())]
    listed = _campaign(env, tmp_path, "api-keys", "list", "--json")
    assert secret not in listed.stdout
    [key] = json.loads(listed.stdout)
    assert (key["name"], key["id"], key["revoked_at"]) == ("crm-sync", public_id, None)
    for args, named in [
        (("create", "my key"), "'my key'"),
        (("create", "crm-sync"), "'crm-sync'"),
        (("revoke", "nobody"), "'nobody'"),
    ]:
        result = _campaign(env, tmp_path, "api-keys", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert named in result.stderr.strip().splitlines()[-1]
    revoked = _campaign(env, tmp_path, "api-keys", "revoke", public_id)
    assert revoked.returncode == 0
    assert "revoked API key crm-sync" in revoked.stdout
