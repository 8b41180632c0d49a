"""What links name is never reused, clicks count once, and queued confirmations go once,
however many senders share the database: on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command

from campaign.insights import reports
from campaign.people import clicks, signups, subscriptions
from campaign.storage import store
from campaign.storage.db import Database, _alembic_config
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer, free_port

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_an_erased_subscribers_id_is_never_given_to_the_next_one(database_url: str) -> None:
    """Erase the newest subscriber, add another: the newcomer gets a new id (SQLite used to
    hand out the erased one again, and with it every link the erased person held)."""
    db = Database(database_url)
    try:
        with db.transaction() as session:
            first = _add(session, "first@example.org")
            erased = _add(session, "erased@example.org")
            store.delete_subscriber(session, erased)
        with db.transaction() as session:
            newcomer = _add(session, "newcomer@example.org")
    finally:
        db.dispose()
    assert first < erased < newcomer


def _add(session: object, email: str) -> int:
    return store.add_subscriber(
        session,
        email=email,
        first_name="",
        timezone="UTC",
        status="active",  # type: ignore[arg-type]  # a Session
        source="test",
        now=NOW,
    )


def test_a_replayed_click_counts_once_per_delivery_and_link(engine: EngineFactory) -> None:
    """The same tracked link followed three times counts once; another link of the same email
    counts too; both redirect every time."""
    app, clock = engine(NOW, TRACK_CLICKS="true")
    subscriptions.subscribe(
        app.db, app.plan, email="reader@example.org", first_name=None, timezone=None, now=NOW
    )
    tick(app, clock, NOW)
    with app.db.transaction() as session:
        [delivery] = store.everything_about(
            session,
            store.find_subscriber(session, "reader@example.org").id,  # type: ignore[union-attr]  # just subscribed
        )["deliveries"]
    secret = app.settings.secret_key.get_secret_value()
    links = [
        app.composer.click_url(delivery["id"], f"https://example.org/{n}", NOW) for n in (1, 2)
    ]
    tokens = [link.rsplit("/", 1)[1] for link in links]
    for token in (tokens[0], tokens[0], tokens[1], tokens[0]):
        assert clicks.follow(app.db, secret, token, NOW).startswith("https://example.org/")
    numbers = {row["key"]: row for row in reports.stats(app.db, app.plan)["steps"]}
    assert numbers["welcome"]["clicks"] == 2


def test_two_senders_send_each_queued_confirmation_once(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Two engines drain the same queue at the same moment: every confirmation goes out
    exactly once."""
    first, _ = engine(NOW)
    second, _ = engine(NOW)
    emails = [f"p{n}@example.org" for n in range(40)]
    for email in emails:
        first.signups.signup(
            email=email, first_name=None, timezone=None, visitor=signups.Visitor(), now=NOW
        )
    go = threading.Barrier(2)

    def drain(app: object) -> None:
        go.wait()
        app.signup_mail.drain(NOW)  # type: ignore[attr-defined]  # an App

    threads = [threading.Thread(target=drain, args=(app,)) for app in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.recipients[0] for r in smtp_server.received) == sorted(emails)


def test_the_upgrade_keeps_every_row_and_stops_sqlite_reusing_ids(tmp_path: Path) -> None:
    """Migrating a SQLite file with people in it (0007 to 0008) copies tables without losing
    one row to a cascade, keeps the case-insensitive email index, and keeps one click per
    delivery and link."""
    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0007")
    with sqlite3.connect(path) as old:
        old.executescript(
            """
            PRAGMA foreign_keys=ON;
            INSERT INTO subscribers VALUES
              (1, 'a@example.org', '', 'UTC', 'active', '', '2026-01-01', '2026-01-01', NULL, NULL),
              (2, 'b@example.org', '', 'UTC', 'active', '', '2026-01-01', '2026-01-01', NULL, NULL);
            INSERT INTO enrollments (id, subscriber_id, plan_id, status, started_at, last_day,
              updated_at) VALUES (1, 1, 'p', 'active', '2026-01-01', -1, '2026-01-01');
            INSERT INTO deliveries (id, enrollment_id, step_key, status, attempts, message_id,
              created_at, updated_at, unknown_outcomes)
              VALUES (1, 1, 'welcome', 'sent', 1, '<m@x>', '2026-01-01', '2026-01-01', 0);
            INSERT INTO clicks (delivery_id, url, at) VALUES (1, 'https://a', '2026-01-01'),
              (1, 'https://a', '2026-01-02'), (1, 'https://b', '2026-01-01');
            INSERT INTO consents (subscriber_id, kind, at, ip, user_agent, source_page)
              VALUES (1, 'signup', '2026-01-01', '', '', '');
            DELETE FROM subscribers WHERE id = 2;
            """
        )
    db.upgrade()
    try:
        with sqlite3.connect(path) as new:
            counts = {
                table: new.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608  # fixed names
                for table in ("subscribers", "enrollments", "deliveries", "clicks", "consents")
            }
        assert counts == {
            "subscribers": 1,
            "enrollments": 1,
            "deliveries": 1,
            "clicks": 2,
            "consents": 1,
        }
        with db.transaction() as session:
            newcomer = _add(session, "c@example.org")
            assert store.find_subscriber(session, "A@EXAMPLE.ORG") is not None
        # id 2 was erased before the upgrade: nothing tells, so new ids start well above
        assert newcomer > 2 + 999_999
    finally:
        db.dispose()


def test_a_confirmation_queued_during_an_outage_goes_once_the_relay_is_back(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The relay is down when someone signs up: the confirmation waits in the database and an
    engine that can reach the relay sends it later, once."""
    down, _ = engine(NOW, SMTP_PORT=str(free_port()))  # nobody listens there
    down.signups.signup(
        email="patient@example.org",
        first_name=None,
        timezone=None,
        visitor=signups.Visitor(),
        now=NOW,
    )
    assert down.signup_mail.drain(NOW) == 0
    up, _ = engine(NOW)
    assert up.signup_mail.drain(NOW) == 0  # not before its retry time
    later = NOW + timedelta(minutes=5)
    assert up.signup_mail.drain(later) == 1
    assert up.signup_mail.drain(later + timedelta(hours=1)) == 0
    assert [r.recipients for r in smtp_server.received] == [["patient@example.org"]]


def test_expired_confirmation_rows_are_purged_but_a_days_are_kept(engine: EngineFactory) -> None:
    """Housekeeping forgets confirmation rows once their links have expired; the rows of the
    last day stay, so the daily per-address limit still counts them."""
    app, _ = engine(NOW)
    for email in ("old@example.org", "new@example.org"):
        at = NOW if email.startswith("old") else NOW + timedelta(days=8, hours=12)
        app.signups.signup(
            email=email, first_name=None, timezone=None, visitor=signups.Visitor(), now=at
        )
    app.signups.purge_pending(NOW + timedelta(days=9), days=14)
    with app.db.transaction() as session:
        old = store.find_subscriber(session, "old@example.org")
        new = store.find_subscriber(session, "new@example.org")
        assert old is not None
        assert new is not None
        assert store.confirmations_since(session, old.id, NOW - timedelta(days=1)) == 0
        assert store.confirmations_since(session, new.id, NOW) == 1
