"""SENDER_PROCESSES under real signals: a killed scheduler takes its sender processes with it,
and SIGTERM stops them all within seconds; either way every email arrives, once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from campaign.clock import SystemClock
from tests.acceptance.real_processes import (
    START,
    CountingSink,
    enrol_many,
    leases,
    scheduler_environ,
    wait_for_leases_to_run_out,
    wait_until,
)
from tests.conftest import ROOT

EMAILS = 1500
SENDERS = {"SMTP_CONNECTIONS": "2", "SENDER_PROCESSES": "2"}


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def test_a_killed_scheduler_takes_its_sender_processes_with_it(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """SIGKILL the scheduler mid-pass: its sender process ends too (no orphan goes on
    sending); started again, it sends the rest, repeating at most one per connection."""
    handler, port = sink
    handler.delay = 0.003  # a slow server: the pass is still running at the kill
    enrol_many(env["DATABASE_URL"], EMAILS)
    environ = {**scheduler_environ(env, port), **SENDERS}
    command = [sys.executable, str(ROOT / "run_scheduler.py"), "--once"]
    first = subprocess.Popen(
        [*command, "--now", START.isoformat()],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: handler.total() >= 200, 120)
    senders = _children(first.pid)
    assert senders, "no sender process was running"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert wait_until(lambda: not _running(senders), 10), "a sender process outlived its parent"
    killed_at = handler.total()
    time.sleep(0.5)  # watching for sends that should no longer happen
    assert handler.total() == killed_at

    # The dead processes' leases run out by the database's clock (10 s); `--now` goes past
    # them too, as their claims' next due time does.
    wait_for_leases_to_run_out(env["DATABASE_URL"])
    second = subprocess.run(
        [*command, "--now", (START + timedelta(seconds=11)).isoformat()],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    duplicates = handler.total() - handler.distinct()
    print(f"\nkilled after {killed_at} of {EMAILS}; duplicates after restart: {duplicates}")
    assert second.returncode == 0, second.stderr
    assert killed_at < EMAILS, "the pass had finished before the kill: nothing was tested"
    assert handler.distinct() == EMAILS
    assert duplicates <= int(SENDERS["SMTP_CONNECTIONS"])


def test_sigterm_stops_the_service_and_its_sender_processes_within_seconds(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """SIGTERM mid-pass: exit 0 within 10 s, every sender process gone, every unsent claim
    given back; the next run sends the rest, nothing twice."""
    handler, port = sink
    handler.delay = 0.003
    enrol_many(env["DATABASE_URL"], EMAILS, start=SystemClock().now() - timedelta(hours=1))
    environ = {**scheduler_environ(env, port), **SENDERS, "LEASE_SECONDS": "300"}
    service = subprocess.Popen(
        [sys.executable, str(ROOT / "run_scheduler.py")],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sending = wait_until(lambda: handler.total() >= 200, 120)
    senders = _children(service.pid)
    service.send_signal(signal.SIGTERM)  # in any case: a failed test leaves no service running
    asked = time.monotonic()
    _, log = service.communicate(timeout=30)
    stopped_after = time.monotonic() - asked

    assert sending, log
    assert service.returncode == 0, log
    assert stopped_after < 10
    assert wait_until(lambda: not _running(senders), 5)  # and multiprocessing's helper
    assert handler.total() < EMAILS, "the pass had finished before SIGTERM: nothing was tested"
    assert leases(env["DATABASE_URL"]) == 0  # given back, not left to expire
    rest = subprocess.run(
        [sys.executable, str(ROOT / "run_scheduler.py"), "--once"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rest.returncode == 0, rest.stderr
    assert handler.distinct() == handler.total() == EMAILS
