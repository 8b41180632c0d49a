"""Leases by the database's clock, kept alive while a pass works: a second engine finds
nothing to take from a first one that is alive but slower than a lease."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from campaign.clock import SystemClock
from campaign.delivery.passes import PassResult
from campaign.people import subscriptions
from campaign.storage.models import Enrollment
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
LEASE = 10  # the smallest LEASE_SECONDS allowed; renewed every third of it
READERS = 5


def test_a_relay_slower_than_the_lease_keeps_the_claims_with_the_live_sender(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The relay holds the first 250 for 11 s, longer than the 10 s lease: the sender's lease
    keeper renews its claims meanwhile, so a second engine that passes after 10.5 s (its clock
    six minutes ahead) takes none of them, and every reader gets the welcome exactly once."""
    settings = {"LEASE_SECONDS": str(LEASE), "SMTP_FINAL_REPLY_TIMEOUT": "60"}
    first, first_clock = engine(START, database_leases=True, **settings)
    second, second_clock = engine(START, database_leases=True, **settings)
    for n in range(READERS):
        subscriptions.subscribe(
            first.db,
            first.plan,
            email=f"r{n}@example.org",
            first_name=None,
            timezone="UTC",
            now=START,
        )
    smtp_server.handler.after_storing.append(LEASE + 1.0)
    results: list[PassResult] = []
    sender = threading.Thread(target=lambda: results.append(tick(first, first_clock, START)))
    sender.start()
    time.sleep(LEASE + 0.5)  # a real lease: the database's clock must pass it
    with first.db.transaction() as session:
        held = session.scalar(
            select(func.count()).where(
                Enrollment.lease_owner.is_not(None),
                Enrollment.lease_expires_at > SystemClock().now(),  # one machine, one clock
            )
        )
    taken = tick(second, second_clock, START.replace(minute=6))
    sender.join(timeout=60)
    assert held == READERS  # renewed: the first engine still holds every claim
    assert (taken.claimed, taken.sent) == (0, 0)
    [done] = results
    assert (done.sent, done.lost) == (READERS, 0)
    recipients = [r.recipients[0] for r in smtp_server.received]
    assert sorted(recipients) == sorted(f"r{n}@example.org" for n in range(READERS))
