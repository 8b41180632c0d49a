"""`campaign webhooks ...` run as an operator would (subprocesses, both databases): add prints
the secret once, bad URLs and event types are exit 2 naming the field, and events reach a
real receiver through `webhooks deliver` and `run --once`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.smtp_server import free_port
from tests.webhook_receiver import Receiver

CAMPAIGN = [sys.executable, "-m", "campaign"]


def _campaign(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAMPAIGN, *args],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Subprocesses are slow on a loaded machine: the storage behind these commands is tested on
# both databases in tests/integration/test_webhooks_out.py.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_endpoints_are_managed_and_fed_from_the_command_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """add (secret shown once), list, deliver, attempts, `run --once`, disable, enable,
    remove; bad input is one line naming the field, exit 2."""

    def campaign(*args: str) -> subprocess.CompletedProcess[str]:
        return _campaign(env, tmp_path, *args)

    refused = campaign("webhooks", "add", "http://hooks.example.org/in")
    assert refused.returncode == 2
    assert "URL: 'http://hooks.example.org/in' must use https" in refused.stderr
    typo = campaign("webhooks", "add", "https://hooks.example.org/in", "--events", "clicks")
    assert (typo.returncode, "events: unknown event type 'clicks'" in typo.stderr) == (2, True)

    port = free_port()
    added = campaign(
        "webhooks", "add", f"http://127.0.0.1:{port}/in", "--events", "subscriber.unsubscribed"
    )
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    listed = campaign("webhooks", "list").stdout
    assert "events=subscriber.unsubscribed" in listed
    assert secret not in listed

    hooks = Receiver(port, secret, tmp_path / "received.jsonl").start("200")
    try:
        now = "2026-12-01T09:00:00+00:00"
        assert campaign("subscribe", "ann@example.org", "--now", now).returncode == 0
        assert campaign("unsubscribe", "ann@example.org", "--now", now).returncode == 0
        assert "pending=1" in campaign("webhooks", "list").stdout
        delivered = campaign("webhooks", "deliver", "--now", now)
        assert "delivered=1" in delivered.stdout, delivered.stderr
        [entry] = hooks.received()
        assert entry["valid"]
        assert entry["body"]["data"]["subscriber"]["email"] == "ann@example.org"
        attempts = campaign("webhooks", "attempts", "1").stdout
        assert "subscriber.unsubscribed" in attempts
        assert f"{entry['id']}  200" in attempts
        # The service delivers on its own: `run --once` runs a round after its pass.
        assert campaign("subscribe", "bob@example.org", "--now", now).returncode == 0
        assert campaign("unsubscribe", "bob@example.org", "--now", now).returncode == 0
        assert campaign("run", "--once", "--now", now).returncode == 0
        assert [e["body"]["data"]["subscriber"]["email"] for e in hooks.received()] == [
            "ann@example.org",
            "bob@example.org",
        ]
    finally:
        hooks.stop()

    assert "disabled" in campaign("webhooks", "disable", "1").stdout
    assert "disabled (disabled by an operator)" in campaign("webhooks", "list").stdout
    assert campaign("webhooks", "enable", "1").returncode == 0
    assert campaign("webhooks", "remove", "1").returncode == 0
    gone = campaign("webhooks", "remove", "1")
    assert (gone.returncode, gone.stderr.strip()) == (
        2,
        "error: no webhook endpoint with id 1 (see `campaign webhooks list`)",
    )
