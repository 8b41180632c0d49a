"""Claiming due work on a real database: exclusive between claimers, one delivery row per step."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from campaign import store
from campaign.db import Database
from campaign.models import Delivery
from campaign.store import Claim

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
STEPS = [("welcome", 0), ("day01", 1), ("day02", 2)]


def _seed(db: Database, count: int) -> None:
    with db.transaction() as session:
        for n in range(count):
            subscriber_id = store.add_subscriber(
                session, email=f"s{n}@example.org", first_name="", timezone="UTC",
                status="active", source="test", now=NOW,
            )  # fmt: skip
            store.enrol(session, subscriber_id, "plan", NOW)


def _claim(db: Database, owner: str, limit: int = 1000) -> list[Claim]:
    with db.transaction() as session:
        return store.claim_due(
            session, plan_id="plan", steps=STEPS, now=NOW, owner=owner,
            lease_until=NOW + timedelta(minutes=5), limit=limit,
            new_message_id=lambda: f"<{uuid.uuid4().hex}@example.org>",
        )  # fmt: skip


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


def test_a_claimed_step_is_not_due_again_until_its_lease_ends(database_url: str) -> None:
    """A second claim during the lease finds nothing; after it, the same delivery row is reused."""
    db = Database(database_url)
    _seed(db, 1)
    [first] = _claim(db, "a")
    assert _claim(db, "b") == []
    with db.transaction() as session:
        later = store.claim_due(
            session, plan_id="plan", steps=STEPS, now=NOW + timedelta(minutes=6), owner="b",
            lease_until=NOW + timedelta(minutes=11), limit=10, new_message_id=lambda: "<new@x>",
        )  # fmt: skip
    db.dispose()
    assert [(c.delivery_id, c.message_id) for c in later] == [(first.delivery_id, first.message_id)]


def test_the_database_refuses_a_second_delivery_row_for_a_step(database_url: str) -> None:
    """The unique (enrollment, step) constraint, not the code, forbids a second send record."""
    db = Database(database_url)
    _seed(db, 1)
    [claim] = _claim(db, "a")
    with pytest.raises(IntegrityError), db.engine.begin() as connection:
        connection.execute(
            Delivery.__table__.insert(),
            {
                "enrollment_id": claim.enrollment_id, "step_key": claim.step_key,
                "status": "queued", "attempts": 0, "message_id": "<other@example.org>",
                "created_at": NOW, "updated_at": NOW,
            },
        )  # fmt: skip
    db.dispose()
