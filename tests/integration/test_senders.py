"""Sender processes (SENDER_PROCESSES): one pass shared by real processes on one database,
each email sent once, stopped on request, started again when one dies, on the plan as saved."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from campaign.delivery.scheduler import Service
from campaign.delivery.senders import SenderPool, connection_shares
from campaign.engine import App, make_service
from campaign.errors import CampaignError
from campaign.people import subscriptions
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def _subscribe(app: App, count: int) -> None:
    for n in range(count):
        subscriptions.subscribe(
            app.db, app.plan, email=f"s{n}@example.org", first_name="", timezone="UTC", now=START
        )


def _pool(service: Service) -> SenderPool:
    assert service.senders is not None
    return service.senders


@pytest.fixture
def service_of() -> Iterator[Any]:
    """make_service for an app, closed (its sender processes ended) after the test."""
    made: list[Service] = []

    def make(app: App) -> Service:
        service = make_service(app)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


def test_connections_are_shared_out_evenly_and_never_left_without_one() -> None:
    """5 connections over 2 processes is 3 + 2; more processes than connections is one each."""
    assert connection_shares(5, 2) == [3, 2]
    assert connection_shares(2, 4) == [1, 1]
    assert connection_shares(4, 1) == [4]


def test_a_pass_over_two_sender_processes_sends_each_email_once(
    engine: EngineFactory, smtp_server: SMTPServer, service_of: Any
) -> None:
    """SENDER_PROCESSES=2: both processes send, over their own connections, and every email
    arrives exactly once."""
    app, _ = engine(START, SMTP_CONNECTIONS="2", SENDER_PROCESSES="2", BATCH_SIZE="10")
    _subscribe(app, 80)
    service = service_of(app)
    service.open()
    assert len(_pool(service).pids()) == 1
    assert os.getpid() not in _pool(service).pids()

    result = service.run_once(START)

    received = smtp_server.received
    assert (result.sent, result.claimed, result.error) == (80, 80, None)
    assert Counter(r.recipients[0] for r in received) == {f"s{n}@example.org": 1 for n in range(80)}
    assert len({r.peer for r in received}) == 2  # one connection from each process


def test_a_sender_process_with_more_than_one_connection_uses_them_all(
    engine: EngineFactory, smtp_server: SMTPServer, service_of: Any
) -> None:
    """Four connections over two processes, two each: the server sees four sessions."""
    app, _ = engine(START, SMTP_CONNECTIONS="4", SENDER_PROCESSES="2", BATCH_SIZE="5")
    _subscribe(app, 90)
    # Slow enough that every connection gets work before the due emails run out.
    smtp_server.handler.handle_DATA = _SlowHandler(smtp_server, 0.01).handle_DATA  # type: ignore[method-assign]

    result = service_of(app).run_once(START)

    assert (result.sent, result.error) == (90, None)
    assert len({r.peer for r in smtp_server.received}) == 4


class _SlowHandler:
    """Accepts each message after `delay` seconds, so that a pass is still running when the
    test asks it to stop."""

    def __init__(self, server: SMTPServer, delay: float) -> None:
        self.accept, self.delay = server.handler.handle_DATA, delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await self.accept(server, session, envelope)


class _UntilEveryPeerSends:
    """Holds each message until `peers` connections have each sent one (at most `wait`
    seconds): every process gets a share of the pass, however fast the others start."""

    def __init__(self, server: SMTPServer, peers: int, wait: float = 30.0) -> None:
        self.accept, self.peers, self.wait = server.handler.handle_DATA, peers, wait
        self.seen: set[Any] = set()
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.seen.add(session.peer)
        if len(self.seen) >= self.peers:
            self.arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), self.wait)
        return await self.accept(server, session, envelope)


def test_a_stop_during_a_pass_ends_every_sender_and_loses_nothing(
    engine: EngineFactory, smtp_server: SMTPServer, service_of: Any
) -> None:
    """Asked to stop mid-pass, both processes finish the message in flight and give the rest
    back; the next pass sends what is left, nothing twice."""
    smtp_server.handler.handle_DATA = _SlowHandler(smtp_server, 0.02).handle_DATA  # type: ignore[method-assign]
    app, _ = engine(START, SMTP_CONNECTIONS="2", SENDER_PROCESSES="2", BATCH_SIZE="5")
    _subscribe(app, 120)
    service = service_of(app)
    service.open()
    threading.Timer(0.5, lambda: (service.stop_requested.set(), _pool(service).stop())).start()

    first = service.run_once(START)

    assert first.stopped
    assert 0 < first.sent < 120
    service.stop_requested.clear()
    service.close()  # the stopped senders end; the next pass starts new ones
    second = service.run_once(START + timedelta(minutes=1))
    received = Counter(r.recipients[0] for r in smtp_server.received)
    assert first.sent + second.sent == 120
    assert received == {f"s{n}@example.org": 1 for n in range(120)}


def _exited(child: int) -> bool:
    """Whether a child of this process has ended (without reaping it: its parent will)."""
    return os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # watching a real process end, not waiting for a schedule
    return bool(condition())


def test_a_sender_process_that_died_is_started_again_for_the_next_pass(
    engine: EngineFactory, smtp_server: SMTPServer, service_of: Any
) -> None:
    """A sender killed between passes (SIGKILL) is replaced; the pass still sends each email
    once and from two processes."""
    app, _ = engine(START, SMTP_CONNECTIONS="2", SENDER_PROCESSES="2", BATCH_SIZE="10")
    _subscribe(app, 40)
    service = service_of(app)
    service.open()
    [dead] = _pool(service).pids()
    os.kill(dead, signal.SIGKILL)
    assert _wait(lambda: _exited(dead), 10)

    result = service.run_once(START)

    [replacement] = _pool(service).pids()
    assert replacement != dead
    assert (result.sent, result.error) == (40, None)
    assert len({r.peer for r in smtp_server.received}) == 2


def test_a_plan_edit_reaches_every_sender_process(
    engine: EngineFactory, smtp_server: SMTPServer, service_of: Any, plan_file: Path
) -> None:
    """A saved subject edit is what every process sends from the next pass on."""
    app, _ = engine(
        START,
        SMTP_CONNECTIONS="2",
        SENDER_PROCESSES="2",
        BATCH_SIZE="5",
        PLAN_PATH=str(plan_file),
    )
    _subscribe(app, 60)
    # The first message waits for the sender process's: it has read the edit by then.
    waiting = _UntilEveryPeerSends(smtp_server, peers=2)
    smtp_server.handler.handle_DATA = waiting.handle_DATA  # type: ignore[method-assign]
    service = service_of(app)
    service.open()
    plan_file.write_text(
        plan_file.read_text().replace(
            "Your free ebook is here: Concepts of Self Healing", "Here is your ebook, as promised"
        )
    )

    assert service.run_once(START).sent == 60

    received = smtp_server.received
    assert len({r.peer for r in received}) == 2
    assert {str(r.message["Subject"]) for r in received} == {"Here is your ebook, as promised"}


def _engine_that_cannot_start() -> Any:
    """A sender process's engine that fails as it is built (run in that process)."""
    raise CampaignError("the database is not reachable from here")


def test_a_sender_process_that_cannot_start_stops_the_service_with_the_reason(
    engine: EngineFactory,
) -> None:
    """A sender process whose engine cannot be built is reported, reason and all, when the
    service starts (not at the first pass), and leaves no process behind."""
    app, _ = engine(START)
    pool = SenderPool(app.dispatcher, [_engine_that_cannot_start])

    with pytest.raises(CampaignError, match="sender process 1 could not start: the database"):
        pool.open()

    assert pool.pids() == []
