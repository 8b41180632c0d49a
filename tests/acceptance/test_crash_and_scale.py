"""The guarantee under real processes: killed mid-pass, or three at once on PostgreSQL, every
email arrives, and a repeat is possible only for the one message in flight at the kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

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

# The sizes the reliability issue asks for (smaller ones for a quick local run).
KILL_TEST_EMAILS = int(os.environ.get("CAMPAIGN_KILL_TEST_EMAILS", "5000"))
SCALE_TEST_EMAILS = int(os.environ.get("CAMPAIGN_SCALE_TEST_EMAILS", "20000"))
KILL_TEST_CONNECTIONS = 3


def test_a_scheduler_killed_mid_pass_loses_nothing_and_repeats_at_most_one_per_connection(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """SIGKILL halfway through a pass over three SMTP connections, then start again: every
    email arrives; duplicates are at most one per connection, and the test prints them."""
    handler, port = sink
    enrol_many(env["DATABASE_URL"], KILL_TEST_EMAILS)
    environ = {**scheduler_environ(env, port), "SMTP_CONNECTIONS": str(KILL_TEST_CONNECTIONS)}
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "run_scheduler.py"), "--once", "--now", START.isoformat()],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: handler.total() >= KILL_TEST_EMAILS // 2, 600)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = handler.total()
    # Started again once the dead process's leases (10 s, by the database's clock) have run
    # out: it drains the rest. Its `--now` is past them too, as the claims' next due time is.
    waited = wait_for_leases_to_run_out(env["DATABASE_URL"])
    after_leases = (START + timedelta(seconds=11)).isoformat()
    second = subprocess.run(
        [sys.executable, str(ROOT / "run_scheduler.py"), "--once", "--now", after_leases],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    duplicates = handler.total() - handler.distinct()
    print(
        f"\nkilled after {killed_at} of {KILL_TEST_EMAILS}; leases ran out {waited:.1f} s later;"
        f" duplicates after restart: {duplicates}"
    )
    assert handler.distinct() == KILL_TEST_EMAILS
    assert duplicates <= KILL_TEST_CONNECTIONS


def test_three_schedulers_at_once_send_each_email_exactly_once(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """Three `run_scheduler.py --once` at once: on PostgreSQL they share the due emails; on
    SQLite the ones that find the sender lock taken stop, naming its holder. Either way every
    email arrives exactly once."""
    handler, port = sink
    enrol_many(env["DATABASE_URL"], SCALE_TEST_EMAILS)
    environ = scheduler_environ(env, port)
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run_scheduler.py"), "--once", "--now", START.isoformat()],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(run.wait(timeout=1200), run.communicate()[1]) for run in runs]
    elapsed = time.monotonic() - started
    print(f"\n3 schedulers: {SCALE_TEST_EMAILS} emails in {elapsed:.1f} s")
    if env["DATABASE_URL"].startswith("postgresql"):
        assert [code for code, _ in outcomes] == [0, 0, 0]
    else:
        assert all(code == 0 or "another scheduler" in err for code, err in outcomes), outcomes
    assert handler.distinct() == SCALE_TEST_EMAILS
    assert handler.total() == SCALE_TEST_EMAILS


def _postgres_only(env: dict[str, str]) -> None:
    if not env["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("about a database server shared by processes: PostgreSQL only")


@pytest.mark.restarts_postgresql
def test_a_postgresql_restart_mid_pass_is_survived(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """`pg_ctlcluster ... restart` while a pass runs: the scheduler reconnects, retries, and
    every email arrives; a repeat is possible only for the one in flight at the restart."""
    _postgres_only(env)
    control = shutil.which("pg_ctlcluster")
    if control is None and os.environ.get("CI") != "true":
        pytest.skip("pg_ctlcluster (Debian's postgresql-common) is not installed")
    assert control is not None, "CI needs pg_ctlcluster to restart PostgreSQL"
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    handler, port = sink
    handler.delay = 0.004  # a slow server: the pass is still running at the restart
    enrol_many(env["DATABASE_URL"], 1000)
    scheduler = subprocess.Popen(
        [sys.executable, str(ROOT / "run_scheduler.py"), "--once", "--now", START.isoformat()],
        cwd=tmp_path,
        env=scheduler_environ(env, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: handler.total() >= 150, 120)
    restart = [control, "--skip-systemctl-redirect", version, "main", "restart"]
    subprocess.run(restart, check=True, capture_output=True, timeout=120)
    restarted_at = handler.total()
    _, log = scheduler.communicate(timeout=600)
    duplicates = handler.total() - handler.distinct()
    print(f"\nrestarted after {restarted_at} of 1000; duplicates: {duplicates}")
    assert scheduler.returncode == 0, log
    assert restarted_at < 1000, "the pass had finished before the restart: nothing was tested"
    assert "retrying" in log  # it did lose the database, and came back
    assert handler.distinct() == 1000
    assert duplicates <= 1


def test_a_rate_limit_holds_in_total_across_two_schedulers(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """Two schedulers on one PostgreSQL with SEND_RATE_PER_SECOND=20 send 80 emails between
    them no faster than 20 a second (after the one-second burst), each exactly once."""
    _postgres_only(env)
    handler, port = sink
    enrol_many(env["DATABASE_URL"], 80, start=SystemClock().now() - timedelta(hours=1))
    environ = {**scheduler_environ(env, port), "SEND_RATE_PER_SECOND": "20", "BATCH_SIZE": "10"}
    command = [sys.executable, str(ROOT / "run_scheduler.py"), "--once"]  # the real clock
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    runs = [subprocess.Popen(command, cwd=tmp_path, env=environ, **quiet) for _ in range(2)]
    outcomes = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert handler.total() == handler.distinct() == 80
    span = max(handler.arrivals) - min(handler.arrivals)
    print(f"\n80 emails by 2 schedulers at 20/s in total: {span:.2f} s")
    assert span >= (80 - 20 - 1) / 20 * 0.95


def test_sigterm_while_waiting_under_a_rate_limit_stops_within_seconds(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """At 60 an hour the second email waits a minute for its turn; SIGTERM during that wait
    ends the service at once (exit 0), and the emails it had claimed go to the next run."""
    handler, port = sink
    enrol_many(env["DATABASE_URL"], 5, start=SystemClock().now() - timedelta(hours=1))
    environ = {**scheduler_environ(env, port), "SEND_RATE_PER_HOUR": "60", "LEASE_SECONDS": "300"}
    service = subprocess.Popen(
        [sys.executable, str(ROOT / "run_scheduler.py")],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sending = wait_until(lambda: handler.total() >= 1, 60)
    service.send_signal(signal.SIGTERM)  # in any case: a failed test leaves no service running
    asked = time.monotonic()
    _, log = service.communicate(timeout=30)
    assert sending, log
    assert service.returncode == 0, log
    assert time.monotonic() - asked < 10
    assert handler.total() == 1
    assert leases(env["DATABASE_URL"]) == 0  # given back, not left to expire
