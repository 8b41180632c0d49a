"""Helpers for tests that run the scheduler as real processes: a counting SMTP sink, bulk
enrolment, the scheduler's environment, and polling a subprocess's progress."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from campaign.db import Database
from tests.conftest import ROOT

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


class CountingSink:
    """An SMTP server that only counts who got which step (20,000 whole messages is memory),
    and when each arrived; `delay` makes it a slow server."""

    def __init__(self) -> None:
        self.recipients: Counter[tuple[str, str]] = Counter()
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        self.delay = 0.0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")  # as Postfix: the engine's usual path
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        step = re.search(rb"X-Campaign-Step: (\S+)", envelope.original_content or b"")
        with self.lock:
            self.arrivals.append(time.monotonic())
            for recipient in envelope.rcpt_tos:
                self.recipients[(recipient, step.group(1).decode() if step else "?")] += 1
        return "250 OK"

    def total(self) -> int:
        with self.lock:
            return sum(self.recipients.values())

    def distinct(self) -> int:
        with self.lock:
            return len(self.recipients)


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
    database.dispose()


def scheduler_environ(env: dict[str, str], smtp_port: int) -> dict[str, str]:
    return {
        **os.environ, **env, "PYTHONPATH": str(ROOT), "SMTP_PORT": str(smtp_port),
        "LOG_LEVEL": "WARNING", "LEASE_SECONDS": "10", "TICK_SECONDS": "1", "BATCH_SIZE": "100",
    }  # fmt: skip


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)  # polling a real subprocess's progress, not waiting for a schedule
    return bool(condition())
