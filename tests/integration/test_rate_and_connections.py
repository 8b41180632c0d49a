"""Sending limits shared through the database, and parallel SMTP connections."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from campaign.delivery.pacing import buckets_for
from campaign.engine import App
from campaign.errors import DatabaseError
from campaign.people import subscriptions
from campaign.storage.db import POOL_OVERFLOW, Database
from campaign.storage.fast_path import DriverConnection
from campaign.storage.store import take_tokens
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer, free_port

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def _take_in_turns(
    url: str, buckets_args: tuple[float, float], step: timedelta, turns: int, want: int
) -> int:
    """Two engines (two connection pools) take turns asking for `want` tokens every `step`."""
    engines = [Database(url), Database(url)]
    buckets = buckets_for(*buckets_args)
    granted = 0
    for turn in range(turns):
        for database in engines:
            with database.transaction() as session:
                granted += take_tokens(session, buckets, want, START + step * turn)
    for database in engines:
        database.dispose()
    return granted


def test_two_engines_share_one_per_second_limit(database_url: str) -> None:
    """10 a second between them: over 4 s at most the 10-token burst plus 10 a second."""
    elapsed = 3.9
    granted = _take_in_turns(database_url, (10, 0), timedelta(seconds=0.1), 40, want=5)
    assert granted <= 10 + 10 * elapsed
    assert granted >= 10 + 10 * elapsed - 2  # and the budget is not wasted either


def test_two_engines_share_one_per_hour_limit(database_url: str) -> None:
    """120 an hour between them: over an hour, at most a minute's burst (2) plus 120."""
    granted = _take_in_turns(database_url, (0, 120), timedelta(minutes=1), 61, want=10)
    assert 118 <= granted <= 2 + 120


def _subscribe(app: App, count: int) -> None:
    for n in range(count):
        subscriptions.subscribe(
            app.db, app.plan, email=f"p{n}@example.org", first_name="", timezone="UTC", now=START
        )


def test_a_pass_is_paced_by_the_per_second_limit(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """20 due at 5 a second: all go, and the pass takes the 3 s the limit asks for (on the
    injected clock, which pacing advances instead of sleeping)."""
    app, clock = engine(START, SEND_RATE_PER_SECOND="5")
    _subscribe(app, 20)
    result = app.dispatcher.run_pass(START)
    assert result.sent == 20
    assert len(smtp_server.received) == 20
    assert timedelta(seconds=3) <= clock.now() - START <= timedelta(seconds=4)


def test_a_pass_is_paced_by_the_per_hour_limit(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """60 an hour allows a burst of one, then one a minute: 5 emails take 4 minutes."""
    app, clock = engine(START, SEND_RATE_PER_HOUR="60")
    _subscribe(app, 5)
    assert app.dispatcher.run_pass(START).sent == 5
    assert timedelta(minutes=4) <= clock.now() - START < timedelta(minutes=5)


def test_parallel_connections_share_a_pass_and_send_each_email_once(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """SMTP_CONNECTIONS=3: the server sees three sessions, and every email exactly once."""
    app, _ = engine(START, SMTP_CONNECTIONS="3", BATCH_SIZE="10")
    _subscribe(app, 60)
    result = app.dispatcher.run_pass(START)
    received = smtp_server.received
    assert result.sent == 60
    assert Counter(r.recipients[0] for r in received) == {f"p{n}@example.org": 1 for n in range(60)}
    assert len({r.peer for r in received}) == 3


def test_a_server_outage_with_parallel_connections_gives_every_claim_back(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """No server answers: the pass stops with one error and every claim goes back unused;
    once a server answers, the next pass sends each email once."""
    down, _ = engine(START, SMTP_CONNECTIONS="3", SMTP_PORT=str(free_port()))
    _subscribe(down, 30)
    result = down.dispatcher.run_pass(START)
    assert result.sent == 0
    assert "cannot connect" in (result.error or "")
    assert result.released == result.claimed == 30
    up, _ = engine(START, SMTP_CONNECTIONS="3")
    assert up.dispatcher.run_pass(START + timedelta(minutes=1)).sent == 30
    assert len(smtp_server.received) == 30


def test_the_most_connections_the_readme_allows_send_in_one_pass(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """SMTP_CONNECTIONS=64 (the maximum) in one process: each connection keeps a database
    connection for its records while the next claim needs one more, and the pool holds them
    all: every email goes once, over many sessions, with no error."""
    app, _ = engine(START, SMTP_CONNECTIONS="64", BATCH_SIZE="8")
    _subscribe(app, 320)
    result = app.dispatcher.run_pass(START)
    received = smtp_server.received
    assert (result.error, result.sent) == (None, 320)
    assert Counter(r.recipients[0] for r in received) == {
        f"p{n}@example.org": 1 for n in range(320)
    }
    assert len({r.peer for r in received}) > 15


def test_a_pool_with_every_connection_in_use_is_a_database_error_that_says_why(
    database_url: str,
) -> None:
    """When no pooled connection comes free within the pool's timeout, a transaction, a read
    and the fast path each raise DatabaseError naming the pool (a pass halts on it and gives
    its claims back), instead of SQLAlchemy's TimeoutError ending the pass."""
    database = Database(database_url, pool_size=1, pool_timeout=0.2)
    held = [database.engine.raw_connection() for _ in range(1 + POOL_OVERFLOW)]

    def write() -> None:
        with database.transaction() as session:
            session.execute(text("SELECT 1"))

    def read() -> None:
        with database.read() as session:
            session.execute(text("SELECT 1"))

    try:
        for attempt in (write, read, lambda: DriverConnection(database).run([("SELECT 1", {})])):
            with pytest.raises(DatabaseError, match=r"no free database connection within 0\.2 s"):
                attempt()
    finally:
        for connection in held:
            connection.close()
        database.dispose()
