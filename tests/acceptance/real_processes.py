"""Helpers for tests that run the scheduler as real processes: a counting SMTP sink (slow,
or answering the final dot late or never), bulk enrolment, the scheduler's environment,
polling a subprocess's progress, and the leases as the database's clock sees them."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from aiosmtpd.controller import Controller
from sqlalchemy import text

from campaign.storage.db import Database
from tests.conftest import ROOT
from tests.smtp_server import free_port

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)

#: how the sink answers the final dot of a message it has stored: at once (after `delay`),
#: after `late_reply` seconds, or never (it closes the connection unanswered).
FinalReply = Literal["at once", "late", "never"]


class CountingSink:
    """An SMTP server that only counts who got which step (20,000 whole messages is memory),
    when each arrived and over which connections. A message counts once the server has it
    whole (the end of DATA), before it answers: `delay` makes it a slow server, and
    `final_reply` one that stores the message and then answers late or never (RFC 1047)."""

    def __init__(self) -> None:
        self.recipients: Counter[tuple[str, str]] = Counter()
        self.arrivals: list[float] = []
        #: the client (host, port) of every connection that delivered a message.
        self.peers: set[Any] = set()
        self.lock = threading.Lock()
        self.delay = 0.0
        self.final_reply: FinalReply = "at once"
        #: the answer for some recipients only, instead of `final_reply`.
        self.final_reply_to: dict[str, FinalReply] = {}
        self.late_reply = 0.0
        #: called with the number of messages stored so far, as each one is stored (in the
        #: server's thread, before it answers): a test can act at an exact point of a pass.
        self.on_message: Callable[[int], None] | None = None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")  # as Postfix: the engine's usual path
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        step = re.search(rb"X-Campaign-Step: (\S+)", envelope.original_content or b"")
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.peers.add(session.peer)
            for recipient in envelope.rcpt_tos:
                self.recipients[(recipient, step.group(1).decode() if step else "?")] += 1
            stored = sum(self.recipients.values())
            recipient = (envelope.rcpt_tos or [""])[0]
            final_reply = self.final_reply_to.get(recipient, self.final_reply)
            late_reply, on_message = self.late_reply, self.on_message
        if on_message is not None:
            on_message(stored)
        if final_reply == "never":
            server.transport.close()  # stored, and no reply ever comes
            return "250 OK"  # written to a closed connection: nobody reads it
        if final_reply == "late":
            await asyncio.sleep(late_reply)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"

    def total(self) -> int:
        with self.lock:
            return sum(self.recipients.values())

    def distinct(self) -> int:
        with self.lock:
            return len(self.recipients)

    def copies(self) -> Counter[tuple[str, str]]:
        """How many copies of each (recipient, step) arrived."""
        with self.lock:
            return Counter(self.recipients)

    def connections(self) -> int:
        with self.lock:
            return len(self.peers)


@contextmanager
def serving(handler: CountingSink) -> Iterator[int]:
    """`handler` as an SMTP server on loopback while the block runs; yields its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def enrol_many(url: str, count: int, start: datetime = START) -> None:
    """Test setup in bulk SQL: `count` active subscribers whose welcome email is due at `start`."""
    database = Database(url)
    naive = start.astimezone(UTC).replace(tzinfo=None)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (id, email, first_name, timezone, status, source,"
                " created_at, updated_at) VALUES (:id, :email, '', 'UTC', 'active', 'test', :t, :t)"
            ),
            [{"id": n, "email": f"r{n}@example.org", "t": naive} for n in range(1, count + 1)],
        )
        connection.execute(
            text(
                "INSERT INTO enrollments (subscriber_id, plan_id, status, started_at, last_day,"
                " next_due_at, updated_at) SELECT id, 'thirty-day-self-healing', 'active', :t,"
                " -1, :t, :t FROM subscribers"
            ),
            {"t": naive},
        )
        if not database.is_sqlite:
            # As autovacuum would within a minute: planned with no statistics, the claim query
            # joins each due enrollment to every active subscriber (0.6 s a batch at 3,000).
            connection.exec_driver_sql("ANALYZE subscribers, enrollments")
    database.dispose()


def scheduler_environ(env: dict[str, str], smtp_port: int) -> dict[str, str]:
    return {
        **os.environ,
        **env,
        "PYTHONPATH": str(ROOT),
        "SMTP_PORT": str(smtp_port),
        "LOG_LEVEL": "WARNING",
        "LEASE_SECONDS": "10",
        "TICK_SECONDS": "1",
        "BATCH_SIZE": "100",
    }


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)  # polling a real subprocess's progress, not waiting for a schedule
    return bool(condition())


# The database's own clock, as leases are measured (campaign.store.leases); on SQLite the
# instants are text with microseconds.
_HELD = "SELECT count(*) FROM enrollments WHERE lease_owner IS NOT NULL"
_RUNNING = {
    "sqlite": f"{_HELD} AND lease_expires_at > (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "postgresql": f"{_HELD} AND lease_expires_at > (statement_timestamp() AT TIME ZONE 'UTC')",
}


def leases(url: str, *, running: bool = False) -> int:
    """Enrollments held by a claim (`running`: only the leases that have not run out by the
    database's clock)."""
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            query = _RUNNING[connection.dialect.name] if running else _HELD
            count = connection.scalar(text(query))
    finally:
        database.dispose()
    return int(count or 0)


def wait_for_leases_to_run_out(url: str, seconds: float = 60) -> float:
    """Wait (real seconds: a lease is real time, not a schedule) until no lease runs by the
    database's clock; return how long that took."""
    started = time.monotonic()
    assert wait_until(lambda: leases(url, running=True) == 0, seconds), "leases still running"
    return time.monotonic() - started
