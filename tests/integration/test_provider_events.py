"""Providers' bounces and complaints applied to a real database (SQLite and PostgreSQL) after
real sends over SMTP: once each, and only when they are about an email we sent."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from campaign.clock import FixedClock
from campaign.engine import App, return_paths
from campaign.people import subscriptions
from campaign.people.provider_webhooks.events import EventKind, ProviderEvent
from campaign.people.provider_webhooks.record import EventOutcome, apply
from campaign.storage import store
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import Received, SMTPServer

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _welcomed(app: App, clock: FixedClock, smtp: SMTPServer, *emails: str) -> list[Received]:
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    return [smtp.to(email)[-1] for email in emails]


def _event(kind: EventKind, address: str, event_id: str = "1", **clues: object) -> ProviderEvent:
    return ProviderEvent(
        provider="testmail",
        event_id=event_id,
        kind=kind,
        address=address,
        detail="550 5.1.1 no such user",
        **clues,  # type: ignore[arg-type]
    )


def _apply(app: App, *events: ProviderEvent, at: datetime = START) -> list[EventOutcome]:
    return apply(
        app.db,
        list(events),
        at,
        return_paths=return_paths(app.settings),
        soft_bounce_limit=app.settings.soft_bounce_limit,
    )


def _status(app: App, email: str) -> str | None:
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
    return known.status if known else None


def _suppressed(app: App, email: str) -> bool:
    with app.db.transaction() as session:
        return store.is_suppressed(session, subscriptions.email_hash(email))


def test_a_hard_bounce_for_an_address_we_mailed_bounces_and_suppresses_it(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The provider's word, with no clue in the payload, is taken for an address we mailed."""
    app, clock = engine(START)
    _welcomed(app, clock, smtp_server, "gone@example.net", "stays@example.net")
    [outcome] = _apply(app, _event(EventKind.HARD_BOUNCE, "GONE@example.net"))
    assert outcome.verdict == "applied", outcome
    assert _status(app, "gone@example.net") == "bounced"
    assert _suppressed(app, "gone@example.net")
    assert _status(app, "stays@example.net") == "active"


def test_a_complaint_matched_by_our_message_id_marks_the_reader_complained(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A complaint naming no recipient is resolved from the Message-ID of our email."""
    app, clock = engine(START)
    [angry, _] = _welcomed(app, clock, smtp_server, "angry@example.net", "calm@example.net")
    event = _event(EventKind.COMPLAINT, "", message_ids=(angry.message["Message-ID"],))
    [outcome] = _apply(app, event)
    assert outcome.verdict == "applied", outcome
    assert _status(app, "angry@example.net") == "complained"
    assert _suppressed(app, "angry@example.net")
    assert _status(app, "calm@example.net") == "active"


def test_a_redacted_complaint_is_resolved_from_our_verp_return_path(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A provider hiding the recipient still names our return path: that reader is marked."""
    app, clock = engine(START)
    [angry, _] = _welcomed(app, clock, smtp_server, "angry@example.net", "calm@example.net")
    [outcome] = _apply(app, _event(EventKind.COMPLAINT, "", return_paths=(angry.sender,)))
    assert outcome.verdict == "applied", outcome
    assert _status(app, "angry@example.net") == "complained"
    assert _status(app, "calm@example.net") == "active"


def test_the_same_event_twice_counts_once(engine: EngineFactory, smtp_server: SMTPServer) -> None:
    """A retried or replayed post of one event is a duplicate: it changes nothing more."""
    app, clock = engine(START, SOFT_BOUNCE_LIMIT="1")
    _welcomed(app, clock, smtp_server, "full@example.net")
    first = _apply(app, _event(EventKind.SOFT_BOUNCE, "full@example.net", "evt-7"))
    again = _apply(app, _event(EventKind.SOFT_BOUNCE, "full@example.net", "evt-7"))
    assert [o.verdict for o in first + again] == ["applied", "duplicate"]
    # The same id from another provider is another event.
    other = ProviderEvent("othermail", "evt-7", EventKind.HARD_BOUNCE, "full@example.net", "x")
    assert [o.verdict for o in _apply(app, other)] == ["applied"]


def test_concurrent_posts_of_one_event_apply_it_once(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Two requests carrying the same event at the same moment: one applies, one is a duplicate."""
    app, clock = engine(START)
    _welcomed(app, clock, smtp_server, "twice@example.net")
    event = _event(EventKind.COMPLAINT, "twice@example.net", "race-1")
    gate = threading.Barrier(4)
    verdicts: list[str] = []

    def post() -> None:
        gate.wait()
        verdicts.extend(o.verdict for o in _apply(app, event))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(verdicts) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert _status(app, "twice@example.net") == "complained"


def test_soft_bounces_suppress_only_after_the_limit_of_steps_in_a_row(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Each soft bounce fails its step; the address is bounced at SOFT_BOUNCE_LIMIT in a row."""
    app, clock = engine(START, SOFT_BOUNCE_LIMIT="2")
    [welcome] = _welcomed(app, clock, smtp_server, "full@example.net")
    first = _event(
        EventKind.SOFT_BOUNCE,
        "full@example.net",
        "s1",
        message_ids=(welcome.message["Message-ID"],),
    )
    [outcome] = _apply(app, first)
    assert outcome.verdict == "applied"
    assert "1 in a row" in outcome.what
    assert _status(app, "full@example.net") == "active"
    assert not _suppressed(app, "full@example.net")
    tick(app, clock, START + timedelta(days=1, hours=1))
    second_email = smtp_server.to("full@example.net")[-1]
    assert second_email.message["Message-ID"] != welcome.message["Message-ID"]
    # No clue this time: the provider's word goes to the latest email sent to the address.
    [outcome] = _apply(app, _event(EventKind.SOFT_BOUNCE, "full@example.net", "s2"))
    assert outcome.verdict == "applied", outcome
    assert _status(app, "full@example.net") == "bounced"
    assert _suppressed(app, "full@example.net")
    with app.db.transaction() as session:
        subscriber = store.find_subscriber(session, "full@example.net")
        assert subscriber is not None
        assert store.consecutive_failures(session, subscriber.id) == 2


def test_a_delivered_step_between_soft_bounces_resets_the_count(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Failures must be in a row: a step that arrived in between keeps the address."""
    app, clock = engine(START, SOFT_BOUNCE_LIMIT="2")
    [welcome] = _welcomed(app, clock, smtp_server, "flaky@example.net")
    tick(app, clock, START + timedelta(days=1, hours=1))  # day01: delivered, no bounce
    tick(app, clock, START + timedelta(days=2, hours=1))
    last = smtp_server.to("flaky@example.net")[-1]
    for n, email in enumerate((welcome, last)):
        ids = (email.message["Message-ID"],)
        event = _event(EventKind.SOFT_BOUNCE, "flaky@example.net", f"f{n}", message_ids=ids)
        [outcome] = _apply(app, event)
        assert outcome.verdict == "applied", outcome
    assert "1 in a row" in outcome.what
    assert _status(app, "flaky@example.net") == "active"
    assert not _suppressed(app, "flaky@example.net")


def test_a_bounce_for_an_address_we_never_mailed_is_not_ours(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Subscribed but never sent anything, or unknown: nobody is suppressed."""
    app, _ = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="unsent@example.net", first_name=None, timezone="UTC", now=START
    )
    outcomes = _apply(
        app,
        _event(EventKind.HARD_BOUNCE, "unsent@example.net", "n1"),
        _event(EventKind.COMPLAINT, "stranger@example.net", "n2"),
        _event(EventKind.COMPLAINT, "", "n3"),
    )
    assert [o.verdict for o in outcomes] == ["not ours"] * 3
    assert "no email sent" in outcomes[0].what
    assert _status(app, "unsent@example.net") == "active"
    assert not _suppressed(app, "unsent@example.net")
    assert not _suppressed(app, "stranger@example.net")


def test_a_message_id_of_an_email_to_someone_else_suppresses_nobody(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A payload whose clue names another recipient's email is not believed for this one."""
    app, clock = engine(START)
    [ann, _] = _welcomed(app, clock, smtp_server, "ann@example.net", "bob@example.net")
    ids = (ann.message["Message-ID"],)
    [outcome] = _apply(app, _event(EventKind.HARD_BOUNCE, "bob@example.net", message_ids=ids))
    assert outcome.verdict == "not ours"
    assert "another address" in outcome.what
    assert _status(app, "bob@example.net") == "active"
    assert _status(app, "ann@example.net") == "active"


def test_hostile_text_in_an_event_reaches_neither_the_database_nor_the_log_raw(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """NUL and newlines in ids, addresses and details are cleaned, not a database error."""
    app, clock = engine(START, SOFT_BOUNCE_LIMIT="5")
    [welcome] = _welcomed(app, clock, smtp_server, "ann@example.net")
    event = ProviderEvent(
        "testmail",
        "id\x00\nforged" + "x" * 1000,
        EventKind.SOFT_BOUNCE,
        "ann@example.net\x00",
        "mailbox full\r\nInjected: header\x00",
        message_ids=(welcome.message["Message-ID"] + "\x00",),
    )
    [outcome] = _apply(app, event)
    assert outcome.verdict == "applied", outcome
    assert "\x00" not in outcome.event_id
    assert "\n" not in outcome.what
    [again] = _apply(app, event)
    assert again.verdict == "duplicate"
