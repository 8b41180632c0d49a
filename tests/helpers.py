"""Small builders shared by tests: walking an engine through time, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from campaign.clock import FixedClock
from campaign.delivery.passes import PassResult
from campaign.engine import App


def tick(app: App, clock: FixedClock, at: datetime) -> PassResult:
    clock.set(at)
    return app.dispatcher.run_pass(clock.now())


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(count)]


def run_campaign(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`campaign ARGS` in a process of its own, with the test environment `env`, in `cwd`."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-m", "campaign", *args],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
