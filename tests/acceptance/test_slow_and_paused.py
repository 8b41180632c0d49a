"""Past the lease, with real processes: schedulers on a slow relay, under a shared rate limit,
paused (SIGSTOP) or with clocks hours apart, and a relay that stores a message and answers its
final dot late or never (FAULT-PLAN cases 10 and 18, experiments E1, E2, E3 and E6). Every
step arrives, exactly once; twice at most where the server's answer never came."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from campaign.clock import SystemClock
from campaign.storage.db import Database
from tests.acceptance.real_processes import (
    START,
    CountingSink,
    FinalReply,
    enrol_many,
    leases,
    scheduler_environ,
    serving,
    wait_until,
)
from tests.conftest import ROOT

SUBSCRIBERS = 300
#: for the relay that answers late or never: few subscribers, each costing a final-reply wait.
UNANSWERED = 20
SCHEDULER = [sys.executable, str(ROOT / "run_scheduler.py")]


def _postgres_only(
    env: dict[str, str],
    why: str = "about schedulers sharing a database server (SQLite has one sender per file)",
) -> None:
    if not env["DATABASE_URL"].startswith("postgresql"):
        pytest.skip(f"PostgreSQL only: {why}")


def _environ(env: dict[str, str], port: int, **overrides: str) -> dict[str, str]:
    """The scheduler's environment, logging its pass lines (`claimed=… lost=…`)."""
    return {**scheduler_environ(env, port), "LOG_LEVEL": "INFO", **overrides}


def _start(environ: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SCHEDULER, *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(runs: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    """Wait for each run; their logs, after checking each exited 0."""
    logs = []
    for run in runs:
        _, log = run.communicate(timeout=timeout)
        assert run.returncode == 0, log
        logs.append(log)
    return logs


def _once(environ: dict[str, str], cwd: Path, at: datetime) -> str:
    """One `run_scheduler.py --once --now at`; its log."""
    command = [*SCHEDULER, "--once", "--now", at.isoformat()]
    run = subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stderr


def _pass_lines(log: str) -> list[str]:
    return [
        line.split("campaign.scheduler: ", 1)[-1]
        for line in log.splitlines()
        if " pass at=" in line
    ]


def _lost(log: str) -> int:
    return sum(int(n) for n in re.findall(r" lost=(\d+)", log))


def _measured(label: str, copies: Counter[tuple[str, str]]) -> int:
    """Print what arrived (copies per subscriber and step); the number of repeats."""
    repeated = sum(count - 1 for count in copies.values())
    most = max(copies.values(), default=0)
    print(f"\n{label}: {len(copies)} distinct, {repeated} repeated, at most {most} per step")
    return repeated


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        database.dispose()


def _deliveries(url: str) -> dict[str, tuple[str, int]]:
    """Each subscriber's welcome delivery: (status, unknown_outcomes)."""
    rows = _rows(
        url,
        "SELECT subscribers.email, deliveries.status, deliveries.unknown_outcomes"
        " FROM deliveries JOIN enrollments ON enrollments.id = deliveries.enrollment_id"
        " JOIN subscribers ON subscribers.id = enrollments.subscriber_id",
    )
    return {email: (status, unknown) for email, status, unknown in rows}


def _nobody_suppressed(url: str) -> None:
    assert _rows(url, "SELECT status, count(*) FROM subscribers GROUP BY status") == [
        ("active", UNANSWERED)
    ]
    assert _rows(url, "SELECT count(*) FROM suppressions") == [(0,)]


def test_two_schedulers_on_a_slow_relay_send_each_welcome_exactly_once(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """Two schedulers whose batches of 200 take twice their 10 s lease on a relay that answers
    in 0.1 s send each of 300 welcome emails exactly once."""
    _postgres_only(env)
    handler, port = sink
    handler.delay = 0.1
    enrol_many(env["DATABASE_URL"], SUBSCRIBERS)
    environ = _environ(env, port, BATCH_SIZE="200")
    started = time.monotonic()
    runs = [_start(environ, tmp_path, "--once", "--now", START.isoformat()) for _ in range(2)]
    logs = _finish(runs, timeout=300)
    elapsed = time.monotonic() - started
    repeated = _measured("E2 slow relay", handler.copies())
    print(f"in {elapsed:.1f} s; " + "; ".join(line for log in logs for line in _pass_lines(log)))
    assert handler.distinct() == SUBSCRIBERS
    assert repeated == 0


def test_two_schedulers_sharing_a_rate_limit_send_each_welcome_exactly_once(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """Two schedulers sharing SEND_RATE_PER_SECOND=10 (300 emails: 30 s, three leases of
    10 s) send each welcome email exactly once."""
    _postgres_only(env)
    handler, port = sink
    # The real clock: a rate limit is real seconds (a fixed `--now` would not wait).
    enrol_many(env["DATABASE_URL"], SUBSCRIBERS, start=SystemClock().now() - timedelta(hours=1))
    environ = _environ(env, port, BATCH_SIZE="200", SEND_RATE_PER_SECOND="10")
    runs = [_start(environ, tmp_path, "--once") for _ in range(2)]
    logs = _finish(runs, timeout=300)
    repeated = _measured("E2 shared rate limit", handler.copies())
    span = max(handler.arrivals) - min(handler.arrivals)
    print(f"in {span:.1f} s; " + "; ".join(line for log in logs for line in _pass_lines(log)))
    assert handler.distinct() == SUBSCRIBERS
    assert repeated == 0


def test_a_scheduler_paused_past_its_lease_sends_none_of_the_claims_it_lost(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A scheduler stopped (SIGSTOP) with claims in hand while another drains them, then
    continued: it sends none of them, says it lost them, and repeats at most the one message
    each of its SMTP connections had in flight; nothing is missing."""
    _postgres_only(env)
    url = env["DATABASE_URL"]
    # The real clock for both: the paused one's claims become due to the other when its
    # leases run out, in real time.
    enrol_many(url, SUBSCRIBERS, start=SystemClock().now() - timedelta(hours=1))
    relay_a, relay_b = CountingSink(), CountingSink()
    relay_a.delay = 0.05
    with serving(relay_a) as port_a, serving(relay_b) as port_b:
        paused = _start(_environ(env, port_a), tmp_path, "--once")
        other: subprocess.Popen[str] | None = None

        def stop_at_the_20th(stored: int) -> None:
            # An exact point: its 20th message stored by the relay, the 250 not read yet.
            if stored == 20:
                os.kill(paused.pid, signal.SIGSTOP)

        def all_recorded_sent_and_no_lease_running() -> bool:
            sent = _rows(url, "SELECT count(*) FROM deliveries WHERE status = 'sent'")
            return sent == [(SUBSCRIBERS,)] and leases(url, running=True) == 0

        relay_a.on_message = stop_at_the_20th
        try:
            assert wait_until(lambda: relay_a.total() >= 20, 60)
            held = leases(url)
            assert held > 0, "the paused scheduler held no claims: nothing was tested"
            other = _start(_environ(env, port_b), tmp_path)  # the service: a pass a second
            drained = wait_until(all_recorded_sent_and_no_lease_running, 120)
            other.send_signal(signal.SIGTERM)
            (other_log,) = _finish([other], timeout=30)
            assert drained, "the other scheduler did not drain what the paused one held"
            sent_before_continuing = relay_a.total()
            paused.send_signal(signal.SIGCONT)
            (paused_log,) = _finish([paused], timeout=60)
        finally:
            for run in (paused, other):  # after a failure: leave no scheduler running
                if run is not None and run.poll() is None:
                    run.send_signal(signal.SIGCONT)
                    run.kill()
                    run.communicate(timeout=30)
    sent_after_continuing = relay_a.total() - sent_before_continuing
    connections = relay_a.connections()
    repeated = _measured("E1 paused past its lease", relay_a.copies() + relay_b.copies())
    print(
        f"paused one: {sent_before_continuing} sent before SIGSTOP over {connections}"
        f" connection(s), {held} claims held, {sent_after_continuing} sent after SIGCONT,"
        f" lost={_lost(paused_log)}; other: {relay_b.total()} sent\n"
        + "\n".join(
            line for line in _pass_lines(paused_log + other_log) if "claimed=0 " not in line
        )
    )
    assert re.search(r"lost \d+ claim\(s\)", paused_log), paused_log
    # Stopped once the relay had its message: nothing was left in flight to send after it.
    assert sent_after_continuing == 0
    assert repeated <= connections  # that message, which the other sent again
    assert len(relay_a.copies() + relay_b.copies()) == SUBSCRIBERS


@pytest.mark.parametrize(
    ("label", "behind", "ahead"),
    [
        ("E6 a clock six minutes ahead", timedelta(0), timedelta(minutes=6)),
        ("E6 a clock three hours behind", timedelta(hours=-3), timedelta(0)),
    ],
)
def test_schedulers_whose_clocks_disagree_send_each_welcome_exactly_once(
    env: dict[str, str],
    sink: tuple[CountingSink, int],
    tmp_path: Path,
    label: str,
    behind: timedelta,
    ahead: timedelta,
) -> None:
    """Two schedulers whose clocks differ (six minutes ahead, three hours behind), with passes
    that overlap and outlast their 10 s lease, send each welcome email exactly once."""
    _postgres_only(env)
    handler, port = sink
    handler.delay = 0.1
    url = env["DATABASE_URL"]
    enrol_many(url, SUBSCRIBERS, start=START - timedelta(hours=4))  # due by both clocks
    environ = _environ(env, port, BATCH_SIZE="200")
    # The one behind first: the one ahead then sees its claims as due long before they are
    # settled, and only the lease (by the database's clock) keeps it off them.
    first = _start(environ, tmp_path, "--once", "--now", (START + behind).isoformat())
    assert wait_until(lambda: leases(url) > 0, 60)
    second = _start(environ, tmp_path, "--once", "--now", (START + ahead).isoformat())
    logs = _finish([first, second], timeout=300)
    repeated = _measured(label, handler.copies())
    print("; ".join(line for log in logs for line in _pass_lines(log)))
    assert handler.distinct() == SUBSCRIBERS
    assert repeated == 0


@pytest.mark.parametrize("answer", ["late", "never"])
def test_a_final_reply_late_or_never_sends_a_step_at_most_twice(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path, answer: FinalReply
) -> None:
    """A relay that stores each message and answers its final dot after 4 s (the wait is 2 s)
    or never: the outcome is unknown, the step goes once more after the retry delay, and a
    second unknown outcome settles it; at most 2 copies, nobody bounced or suppressed.
    (On SQLite the same is proven in process: tests/integration/test_final_reply.py.)"""
    _postgres_only(env, "on SQLite, tests/integration/test_final_reply.py proves it in process")
    handler, port = sink
    url = env["DATABASE_URL"]
    enrol_many(url, UNANSWERED)
    environ = _environ(
        env, port, SMTP_FINAL_REPLY_TIMEOUT="2", RETRY_BASE_SECONDS="60", SMTP_CONNECTIONS="4"
    )
    handler.final_reply, handler.late_reply = answer, 4.0
    first = _once(environ, tmp_path, START)
    after_first = handler.copies()
    states_after_first = Counter(_deliveries(url).values())
    # Past the retry delay (60 s, jitter up to 1.5x): half the relay's answers still get lost.
    handler.final_reply = "at once"
    still_unanswered = [f"r{n}@example.org" for n in range(1, UNANSWERED // 2 + 1)]
    handler.final_reply_to = dict.fromkeys(still_unanswered, answer)
    _once(environ, tmp_path, START + timedelta(minutes=10))
    handler.final_reply_to = {}
    _once(environ, tmp_path, START + timedelta(minutes=20))  # nothing is left to send

    copies = handler.copies()
    _measured(f"E3 final reply {answer}", copies)
    states = _deliveries(url)
    print(
        f"after the first pass: {dict(states_after_first)}; now: {dict(Counter(states.values()))}"
    )
    assert "outcome unknown" in first
    assert set(after_first.values()) == {1}
    assert len(after_first) == UNANSWERED
    assert states_after_first == Counter({("retry", 1): UNANSWERED})
    assert max(copies.values()) <= 2
    assert len(copies) == UNANSWERED
    for email, state in states.items():
        assert state == (("unknown", 2) if email in still_unanswered else ("sent", 1)), email
    _nobody_suppressed(url)


def test_with_no_unknown_outcome_retries_a_step_goes_once_and_is_settled_unknown(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """UNKNOWN_OUTCOME_RETRIES=0 and a relay that stores each message and closes the
    connection unanswered: exactly 1 copy per step, status unknown, never sent again."""
    handler, port = sink
    url = env["DATABASE_URL"]
    enrol_many(url, UNANSWERED)
    environ = _environ(
        env,
        port,
        SMTP_FINAL_REPLY_TIMEOUT="2",
        RETRY_BASE_SECONDS="60",
        SMTP_CONNECTIONS="4",
        UNKNOWN_OUTCOME_RETRIES="0",
    )
    handler.final_reply = "never"
    log = _once(environ, tmp_path, START)
    handler.final_reply = "at once"
    _once(environ, tmp_path, START + timedelta(minutes=10))

    copies = handler.copies()
    _measured("E3 no unknown-outcome retries", copies)
    assert "not sent again" in log
    assert len(copies) == UNANSWERED
    assert set(copies.values()) == {1}
    assert set(_deliveries(url).values()) == {("unknown", 1)}
    _nobody_suppressed(url)


def test_a_final_reply_after_smtp_timeout_but_within_its_own_wait_is_a_normal_send(
    env: dict[str, str], sink: tuple[CountingSink, int], tmp_path: Path
) -> None:
    """A 250 that comes 2 s after the final dot, past SMTP_TIMEOUT=1 but within
    SMTP_FINAL_REPLY_TIMEOUT=5, is a send like any other: exactly 1 copy, status sent.
    (On SQLite the same is proven in process: tests/integration/test_final_reply.py.)"""
    _postgres_only(env, "on SQLite, tests/integration/test_final_reply.py proves it in process")
    handler, port = sink
    url = env["DATABASE_URL"]
    enrol_many(url, UNANSWERED)
    environ = _environ(
        env, port, SMTP_TIMEOUT="1", SMTP_FINAL_REPLY_TIMEOUT="5", SMTP_CONNECTIONS="4"
    )
    handler.final_reply, handler.late_reply = "late", 2.0
    log = _once(environ, tmp_path, START)

    copies = handler.copies()
    _measured("E3 final reply within its own wait", copies)
    print("; ".join(_pass_lines(log)))
    assert "outcome unknown" not in log
    assert len(copies) == UNANSWERED
    assert set(copies.values()) == {1}
    assert set(_deliveries(url).values()) == {("sent", 0)}
    _nobody_suppressed(url)
