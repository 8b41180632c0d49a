"""Enrollment history in the schema, on both databases: old enrollments are kept, at most one
per subscriber and plan is active, and one enrollment never gets a step twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from campaign.storage import store
from campaign.storage.db import Database, _alembic_config

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _subscriber(db: Database, email: str = "ann@example.org") -> int:
    with db.transaction() as session:
        return store.add_subscriber(
            session,
            email=email,
            first_name="",
            timezone="UTC",
            status="active",
            source="test",
            now=NOW,
        )


def _insert_enrollment(db: Database, subscriber_id: int, status: str) -> None:
    with db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO enrollments (subscriber_id, plan_id, status, started_at, last_day,"
                " updated_at) VALUES (:s, 'plan', :status, :now, -1, :now)"
            ),
            {"s": subscriber_id, "status": status, "now": NOW.replace(tzinfo=None)},
        )


def test_the_database_refuses_a_second_active_enrollment_but_keeps_old_ones(
    database_url: str,
) -> None:
    """Cancelled and completed enrollments may pile up; a second active one is refused by
    the partial unique index itself, not only by the code."""
    db = Database(database_url)
    subscriber = _subscriber(db)
    _insert_enrollment(db, subscriber, "cancelled")
    _insert_enrollment(db, subscriber, "completed")
    _insert_enrollment(db, subscriber, "cancelled")
    _insert_enrollment(db, subscriber, "active")
    with pytest.raises(IntegrityError):
        _insert_enrollment(db, subscriber, "active")
    _insert_enrollment(db, _subscriber(db, "bob@example.org"), "active")  # another person
    db.dispose()


def test_enrol_starts_afresh_once_and_one_enrollment_never_gets_a_step_twice(
    database_url: str,
) -> None:
    """`enrol` makes a new enrollment only when none is active; the (enrollment, step key)
    uniqueness still forbids a second delivery row within one enrollment."""
    db = Database(database_url)
    subscriber = _subscriber(db)
    with db.transaction() as session:
        first = store.enrol(session, subscriber, "plan", NOW)
        assert first is not None
        assert store.enrol(session, subscriber, "plan", NOW) is None
        store.cancel_enrollments(session, subscriber, NOW)
        second = store.enrol(session, subscriber, "plan", NOW)
        assert second is not None
        assert second != first
        assert store.active_enrollment_id(session, subscriber, "plan") == second
    insert = text(
        "INSERT INTO deliveries (enrollment_id, step_key, status, attempts, unknown_outcomes,"
        " message_id, created_at, updated_at) VALUES (:e, 'welcome', 'sent', 1, 0, :m, :now, :now)"
    )
    now = NOW.replace(tzinfo=None)
    with db.transaction() as session:
        session.execute(insert, {"e": first, "m": "<1@x>", "now": now})
        session.execute(insert, {"e": second, "m": "<2@x>", "now": now})  # a new enrollment
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.execute(insert, {"e": second, "m": "<3@x>", "now": now})
    db.dispose()


def test_the_migration_keeps_enrollments_and_goes_back_down(database_url: str) -> None:
    """0008 -> 0009 keeps every enrollment; downgrading keeps the newest one per person."""
    db = Database(database_url)
    subscriber = _subscriber(db)
    with db.engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0008")
    _insert_enrollment(db, subscriber, "cancelled")
    db.upgrade()
    _insert_enrollment(db, subscriber, "active")
    with db.engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0008")
    with db.transaction() as session:
        rows = session.execute(text("SELECT status FROM enrollments")).all()
    assert [r.status for r in rows] == ["active"]
    db.upgrade()
    assert db.schema_state() == "current"
    db.dispose()
