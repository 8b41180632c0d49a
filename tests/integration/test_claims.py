"""Claiming due work on a real database: exclusive between claimers, one delivery row per step."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaign.clock import FixedClock
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.models import Delivery
from campaign.storage.store import Claim, LeaseTime, ProofRequest

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
STEPS = [("welcome", 0), ("day01", 1), ("day02", 2)]


def _seed(db: Database, count: int) -> None:
    with db.transaction() as session:
        for n in range(count):
            subscriber_id = store.add_subscriber(
                session,
                email=f"s{n}@example.org",
                first_name="",
                timezone="UTC",
                status="active",
                source="test",
                now=NOW,
            )
            store.enrol(session, subscriber_id, "plan", NOW)


def _claim(db: Database, owner: str, limit: int = 1000) -> list[Claim]:
    with db.transaction() as session:
        return store.claim_due(
            session,
            plans={"plan": STEPS},
            now=NOW,
            owner=owner,
            lease_until=NOW + timedelta(minutes=5),
            limit=limit,
            new_message_id=lambda: f"<{uuid.uuid4().hex}@example.org>",
        )


def test_two_claimers_at_once_never_claim_the_same_step(database_url: str) -> None:
    """Four threads claiming concurrently split the due work with no overlap and nothing lost."""
    db = Database(database_url)
    _seed(db, 200)
    barrier = threading.Barrier(4)
    results: dict[str, list[Claim]] = {}

    def worker(owner: str) -> None:
        barrier.wait()
        claimed: list[Claim] = []
        while batch := _claim(db, owner, limit=7):
            claimed.extend(batch)
        results[owner] = claimed

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.dispose()
    claimed = [c.enrollment_id for claims in results.values() for c in claims]
    assert len(claimed) == 200
    assert len(set(claimed)) == 200


def _claim_at(
    db: Database, owner: str, now: datetime, lease: LeaseTime, limit: int = 10
) -> list[Claim]:
    """Claim as an engine whose own clock reads `now`, under `lease`."""
    with db.transaction() as session:
        return store.claim_due(
            session,
            plans={"plan": STEPS},
            now=now,
            owner=owner,
            lease_until=now + timedelta(seconds=lease.seconds),
            limit=limit,
            new_message_id=lambda: f"<{uuid.uuid4().hex}@example.org>",
            lease=lease,
        )


def test_a_claimed_step_is_not_due_again_until_its_lease_ends(database_url: str) -> None:
    """A second claim during the lease finds nothing, even by a clock 6 minutes ahead; after
    the lease (by the lease clock), the same delivery row is reused."""
    db = Database(database_url)
    _seed(db, 1)
    database_clock = FixedClock(NOW)
    lease = LeaseTime(300, database_clock)
    [first] = _claim_at(db, "a", NOW, lease)
    assert _claim_at(db, "b", NOW, lease) == []
    database_clock.advance(timedelta(seconds=299))
    assert _claim_at(db, "b", NOW + timedelta(minutes=6), lease) == []  # b's clock is ahead
    database_clock.advance(timedelta(seconds=2))
    later = _claim_at(db, "b", NOW + timedelta(minutes=6), lease)
    db.dispose()
    assert [(c.delivery_id, c.message_id) for c in later] == [(first.delivery_id, first.message_id)]


def test_a_lease_runs_by_the_databases_own_clock(database_url: str) -> None:
    """With no injected clock a lease is measured by the database: a claimer whose host clock
    is six minutes ahead finds the step held until the database says 2 s have passed."""
    db = Database(database_url)
    _seed(db, 1)
    lease = LeaseTime(2)  # the database's clock, as in production
    [first] = _claim_at(db, "a", NOW, lease)
    assert _claim_at(db, "b", NOW + timedelta(minutes=6), lease) == []
    time.sleep(2.2)  # a real lease: the database's clock must really move on
    later = _claim_at(db, "b", NOW + timedelta(minutes=6), lease)
    db.dispose()
    assert [c.delivery_id for c in later] == [first.delivery_id]
    assert later[0].owner == "b"


def test_only_the_holder_records_an_outcome_but_a_250_always_counts(database_url: str) -> None:
    """After a takeover the old holder can neither defer nor send the step (its proof fails);
    a 250 it got anyway is recorded, and then the new holder's proof fails: one send."""
    db = Database(database_url)
    _seed(db, 1)
    database_clock = FixedClock(NOW)
    lease = LeaseTime(60, database_clock)
    [old] = _claim_at(db, "a", NOW, lease)
    database_clock.advance(timedelta(seconds=61))  # "a" was paused past its lease
    [new] = _claim_at(db, "b", NOW + timedelta(seconds=61), lease)
    assert (new.delivery_id, new.owner) == (old.delivery_id, "b")
    with db.transaction() as session:
        assert not store.record_retry(session, old, NOW, "451 later", NOW + timedelta(hours=1))
    with store.DeliveryRecorder(db) as recorder:
        assert not recorder.record_and_prove(None, ProofRequest(old, lease)).held
        assert recorder.record_and_prove(None, ProofRequest(new, lease)).held
        # "a" had sent it before its pause: the server's 250 is recorded whoever holds it...
        late = store.Accepted(old, NOW, NOW + timedelta(days=1))
        assert recorder.record_sent(late)
        # ...and the new holder may no longer send it.
        assert not recorder.record_and_prove(None, ProofRequest(new, lease)).held
    with db.transaction() as session:
        status, attempts = session.execute(
            select(Delivery.status, Delivery.attempts).where(Delivery.id == old.delivery_id)
        ).one()
    db.dispose()
    assert (status, attempts) == ("sent", 1)


def test_the_database_refuses_a_second_delivery_row_for_a_step(database_url: str) -> None:
    """The unique (enrollment, step) constraint, not the code, forbids a second send record."""
    db = Database(database_url)
    _seed(db, 1)
    [claim] = _claim(db, "a")
    with pytest.raises(IntegrityError), db.engine.begin() as connection:
        connection.execute(
            Delivery.__table__.insert(),
            {
                "enrollment_id": claim.enrollment_id,
                "step_key": claim.step_key,
                "status": "queued",
                "attempts": 0,
                "message_id": "<other@example.org>",
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
    db.dispose()
