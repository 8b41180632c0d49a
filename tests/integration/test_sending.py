"""Sending passes against a real database (SQLite and PostgreSQL) and a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from campaign.clock import FixedClock
from campaign.delivery.smtp import SMTPTransport
from campaign.delivery.testing import RecordingTransport
from campaign.delivery.web_version import NoWebVersion, web_version
from campaign.domain.transport import Envelope
from campaign.engine import App
from campaign.errors import PermanentFailure, TemporaryFailure
from campaign.insights import reports
from campaign.people import subscriptions
from campaign.storage import store
from campaign.storage.models import Delivery, Subscriber
from tests.conftest import ROOT, EngineFactory
from tests.helpers import hours, tick
from tests.smtp_server import Received, SMTPServer, free_port

START = datetime(2026, 10, 20, 0, 0, tzinfo=UTC)  # before both the EU and the US DST change
ZONES = {
    "la@example.org": "America/Los_Angeles",
    "berlin@example.org": "Europe/Berlin",
    "kolkata@example.org": "Asia/Kolkata",
}
STEP_ORDER = ["welcome"] + [f"day{n:02d}" for n in range(1, 31)]


def _step(received: Received) -> str:
    return str(received.message["X-Campaign-Step"]).split("/", 1)[1]


def _sent_at(received: Received) -> datetime:
    return parsedate_to_datetime(str(received.message["Date"]))


@pytest.mark.slow
def test_a_month_walk_delivers_31_emails_in_order_at_local_morning(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Hourly ticks for 32 days across DST: each subscriber gets 31 emails, in order, at 07:xx."""
    app, clock = engine(START)
    for email, zone in ZONES.items():
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone=zone, now=START
        )
    for instant in hours(START, 32 * 24):
        tick(app, clock, instant)

    for email, zone in ZONES.items():
        tz = ZoneInfo(zone)
        mails = smtp_server.to(email)
        assert [_step(m) for m in mails] == STEP_ORDER, email
        enrolled_on = START.astimezone(tz).date()
        for day, mail in enumerate(mails[1:], start=1):
            local = _sent_at(mail).astimezone(tz)
            assert local.date() == enrolled_on + timedelta(days=day), (email, day, local)
            assert 7 <= local.hour < 8, (email, day, local)  # the first hourly pass after 07:00
    assert len(smtp_server.received) == 3 * 31


def test_unsubscribe_on_day_ten_stops_the_rest(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """After unsubscribing on day 10 a subscriber gets nothing more, while others go on."""
    app, clock = engine(START)
    for email in ("leaver@example.org", "stayer@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="Europe/Berlin", now=START
        )
    for instant in hours(START, 15 * 24):
        tick(app, clock, instant)
        if len(smtp_server.to("leaver@example.org")) == 11:  # welcome + days 1-10
            subscriptions.unsubscribe(app.db, email="leaver@example.org", now=instant)
    assert [_step(m) for m in smtp_server.to("leaver@example.org")] == STEP_ORDER[:11]
    assert len(smtp_server.to("stayer@example.org")) == 15


def test_temporary_failure_is_retried_and_sent_once(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 451 defers the email; the next pass sends it, once, with the same Message-ID."""
    app, clock = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name="Ann", timezone="UTC", now=START
    )
    smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
    first = tick(app, clock, START)
    assert (first.sent, first.retried) == (0, 1)
    assert smtp_server.received == []
    for instant in hours(START + timedelta(hours=1), 3):
        tick(app, clock, instant)
    assert [_step(m) for m in smtp_server.to("ann@example.org")] == ["welcome"]
    with app.db.transaction() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.step_key == "welcome")).one()
        assert (delivery.status, delivery.attempts) == ("sent", 2)
        assert str(smtp_server.received[0].message["Message-ID"]) == delivery.message_id


def test_permanent_failure_bounces_the_subscriber_and_spares_the_others(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 550 at RCPT marks that subscriber bounced; the same pass still serves everyone else."""
    app, clock = engine(START)
    for email in ("gone@example.org", "here@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=START
        )
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    result = tick(app, clock, START)
    assert (result.sent, result.bounced) == (1, 1)
    for instant in hours(START + timedelta(hours=1), 3 * 24 + 8):  # through day 3, 07:00
        tick(app, clock, instant)
    assert smtp_server.to("gone@example.org") == []
    assert len(smtp_server.to("here@example.org")) == 4
    with app.db.transaction() as session:
        status = session.scalar(
            select(Subscriber.status).where(Subscriber.email == "gone@example.org")
        )
        delivery = session.scalars(select(Delivery).where(Delivery.status == "bounced")).one()
    assert status == "bounced"
    assert delivery.last_error is not None
    assert "550" in delivery.last_error


def test_a_dropped_connection_defers_one_email_and_the_pass_goes_on(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 421 closes the connection: that email is retried later, the rest go out on a new one."""
    app, clock = engine(START)
    for n in range(3):
        subscriptions.subscribe(
            app.db, app.plan, email=f"p{n}@example.org", first_name=None, timezone="UTC", now=START
        )
    smtp_server.handler.data_replies.append("421 4.3.2 Closing connection")
    result = tick(app, clock, START)
    assert (result.sent, result.retried) == (2, 1)
    tick(app, clock, START + timedelta(hours=1))
    assert sorted(r.recipients[0] for r in smtp_server.received) == [
        "p0@example.org",
        "p1@example.org",
        "p2@example.org",
    ]


def test_a_claim_left_by_a_dead_process_is_sent_once_after_its_lease(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A process that claimed and died sends nothing; once its lease ends the email goes once."""
    app, clock = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name="Ann", timezone="UTC", now=START
    )
    with app.db.transaction() as session:
        claims = store.claim_due(
            session,
            plans={app.plan.id: [(s.key, s.day) for s in app.plan.steps]},
            now=START,
            owner="dead-process",
            lease_until=START + timedelta(minutes=5),
            limit=10,
            new_message_id=app.composer.new_message_id,
            lease=app.dispatcher.leases,
        )
    assert len(claims) == 1
    assert tick(app, clock, START + timedelta(minutes=1)).sent == 0
    assert tick(app, clock, START + timedelta(minutes=6)).sent == 1
    assert tick(app, clock, START + timedelta(minutes=20)).sent == 0
    [mail] = smtp_server.to("ann@example.org")
    assert str(mail.message["Message-ID"]) == claims[0].message_id


def test_crlf_in_a_name_adds_no_header(engine: EngineFactory, smtp_server: SMTPServer) -> None:
    """Names with raw or RFC 2047-encoded line breaks reach one recipient and add no header."""
    app, clock = engine(START)
    names = {
        "raw@example.org": "Eve\r\nBcc: victim@example.net",
        "encoded@example.org": "=?utf-8?q?x=0D=0ABcc:_victim@example.net?=",
    }
    with app.db.transaction() as session:
        for email, name in names.items():
            # Stored as given (bypassing input clean-up) to prove the header sanitiser alone holds.
            subscriber_id = store.add_subscriber(
                session,
                email=email,
                first_name=name,
                timezone="UTC",
                status="active",
                source="test",
                now=START,
            )
            store.enrol(session, subscriber_id, app.plan.id, START)
    # day 7's subject greets by name: walk there so the name reaches the Subject header too.
    for instant in hours(START, 8 * 24):
        tick(app, clock, instant)
    for email in names:
        mails = smtp_server.to(email)
        assert len(mails) == 8
        for mail in mails:
            assert mail.recipients == [email]
            assert mail.message["Bcc"] is None
            assert b"\nBcc:" not in mail.data
            assert b"\rBcc:" not in mail.data
            assert len(mail.message.get_all("To") or []) == 1
        subject = str(mails[7].message["Subject"])  # day 7 greets by name
        assert "\r" not in subject
        assert "\n" not in subject


def test_one_malformed_subscriber_does_not_stop_the_pass(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """An address stored malformed fails its own delivery; everyone else is still served."""
    app, clock = engine(START)
    with app.db.transaction() as session:
        for email in ("broken\r\nBcc: x@example.org@example.org", "fine@example.org"):
            subscriber_id = store.add_subscriber(
                session,
                email=email,
                first_name="",
                timezone="UTC",
                status="active",
                source="test",
                now=START,
            )
            store.enrol(session, subscriber_id, app.plan.id, START)
    result = tick(app, clock, START)
    assert (result.sent, result.failed) == (1, 1)
    assert [r.recipients for r in smtp_server.received] == [["fine@example.org"]]


class _UnsubscribesDuringThePass(RecordingTransport):
    """Accepts messages; while accepting the first, someone else unsubscribes."""

    def __init__(self, app: App, leaver: str) -> None:
        super().__init__()
        self.app, self.leaver = app, leaver

    def send(self, envelope: Envelope, data: bytes) -> None:
        super().send(envelope, data)
        if len(self.sent) == 1:
            subscriptions.unsubscribe(self.app.db, email=self.leaver, now=START)


def test_an_unsubscribe_during_a_pass_stops_an_email_already_claimed(
    engine: EngineFactory,
) -> None:
    """Status is re-read just before SMTP: a claimed email of someone who just left never goes."""
    app, clock = engine(START)
    for email in ("first@example.org", "leaver@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=START
        )
    transport = _UnsubscribesDuringThePass(app, "leaver@example.org")
    app.dispatcher.transport = transport
    result = tick(app, clock, START)
    assert result.claimed == 2
    assert (result.sent, result.skipped) == (1, 1)
    assert [m.envelope.recipient for m in transport.sent] == ["first@example.org"]


def _walk_with_outage(
    app: App, clock: FixedClock, outage: tuple[int, int], total_days: int
) -> None:
    """Hourly passes from START, none during `outage` (first and last hour after START)."""
    for instant in hours(START, total_days * 24):
        hour = int((instant - START).total_seconds() // 3600)
        if not outage[0] <= hour < outage[1]:
            tick(app, clock, instant)


def test_after_downtime_the_month_shifts_later_one_email_a_day(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """With `catch_up: shift` (the default) a 3-day outage loses nothing and never bursts; the
    late step waits for the morning's send window instead of going out at midnight."""
    app, clock = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=START
    )
    _walk_with_outage(app, clock, outage=(4 * 24, 7 * 24), total_days=36)
    mails = smtp_server.to("ann@example.org")
    assert [_step(m) for m in mails] == STEP_ORDER
    days = [_sent_at(m).date() for m in mails]
    assert len(set(days)) == len(days)  # never two on one local day
    # The outage ends at 00:00: day 4 waits for that day's window, at 07:00.
    assert _sent_at(mails[4]) == START + timedelta(days=7, hours=7)
    assert _sent_at(mails[5]) == START + timedelta(days=8, hours=7)


def test_skip_after_skips_daily_steps_that_are_too_late(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """With `catch_up: {skip_after: 6}` steps more than 6 h late are recorded skipped, not sent."""
    (tmp_path / "plans").mkdir()
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    plan_file = tmp_path / "plans" / "thirty_day.yaml"
    text = (ROOT / "plans" / "thirty_day.yaml").read_text()
    plan_file.write_text(text.replace("steps:\n", "catch_up:\n  skip_after: 6\nsteps:\n", 1))
    app, clock = engine(START, PLAN_PATH=str(plan_file))
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=START
    )
    _walk_with_outage(app, clock, outage=(4 * 24, 7 * 24), total_days=9)
    sent = [_step(m) for m in smtp_server.to("ann@example.org")]
    assert sent == ["welcome", "day01", "day02", "day03", "day07", "day08"]
    numbers = {row["key"]: row for row in reports.stats(app.db, app.plan)["steps"]}
    assert [numbers[k]["skipped"] for k in ("day04", "day05", "day06", "day07")] == [1, 1, 1, 0]
    # A skipped lesson's web version still opens (later lessons link back to it); the month's
    # next lesson does not, until it is sent.
    with app.db.read() as session:
        ann = store.find_subscriber(session, "ann@example.org")
    assert ann is not None
    now = clock.now()
    token = app.content.composer.web_version_base(ann.id, now).rstrip("/").rsplit("/", 1)[1]
    secret = app.settings.secret_key.get_secret_value()
    page = web_version(app.db, app.contents, secret, token, "day05", now)
    assert page.subject == "The muscles that really hold you upright"
    with pytest.raises(NoWebVersion):
        web_version(app.db, app.contents, secret, token, "day09", now)


def test_a_throttle_backs_off_the_whole_relay_without_using_attempts(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 4.7.x reply pauses all sending for a backoff; then everything goes, once each."""
    app, clock = engine(START)
    for n in range(3):
        subscriptions.subscribe(
            app.db, app.plan, email=f"t{n}@example.org", first_name=None, timezone="UTC", now=START
        )
    smtp_server.handler.data_replies.append("451 4.7.1 Rate limited, slow down")
    first = tick(app, clock, START)
    assert first.sent == 0
    assert first.error is not None
    assert "throttled" in first.error
    assert tick(app, clock, START + timedelta(seconds=30)).sent == 0  # still backing off
    assert smtp_server.received == []
    assert tick(app, clock, START + timedelta(minutes=2)).sent == 3
    with app.db.transaction() as session:
        attempts = list(session.scalars(select(Delivery.attempts)))
    assert attempts == [1, 1, 1]  # the throttle used up nobody's attempts


def test_a_mailbox_that_soft_bounces_on_k_steps_in_a_row_is_suppressed(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """With MAX_ATTEMPTS=1 and SOFT_BOUNCE_LIMIT=2, two failed steps in a row stop the email."""
    app, clock = engine(START, MAX_ATTEMPTS="1", SOFT_BOUNCE_LIMIT="2")
    subscriptions.subscribe(
        app.db, app.plan, email="full@example.org", first_name=None, timezone="UTC", now=START
    )
    smtp_server.handler.rcpt_replies["full@example.org"] = "452 4.2.2 Mailbox full"
    for instant in hours(START, 4 * 24):
        tick(app, clock, instant)
    with app.db.transaction() as session:
        known = store.find_subscriber(session, "full@example.org")
        statuses = list(session.scalars(select(Delivery.status).order_by(Delivery.id)))
    assert known is not None
    assert known.status == "bounced"
    assert statuses == ["failed", "failed"]  # welcome and day 1; nothing tried after that


def test_an_hour_without_smtp_loses_nothing_and_drains_without_a_burst(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """SMTP unreachable 06:30-07:30 on day 1: passes pause, then everything due goes once."""
    app, clock = engine(START)
    for n in range(5):
        subscriptions.subscribe(
            app.db,
            app.plan,
            email=f"d{n}@example.org",
            first_name=None,
            timezone="UTC",
            now=START,
        )
    tick(app, clock, START)
    working = app.dispatcher.transport
    app.dispatcher.transport = SMTPTransport("127.0.0.1", free_port(), security="none", timeout=2)
    for minutes in range(0, 61, 10):  # every 10 minutes through the outage
        at = START + timedelta(days=1, hours=6, minutes=30 + minutes)
        paused = tick(app, clock, at)
        assert paused.sent == 0
        assert (paused.error is not None) == (at.hour >= 7)  # day 1 is due from 07:00
    app.dispatcher.transport = working
    drained = tick(app, clock, START + timedelta(days=1, hours=7, minutes=40))
    assert drained.sent == 5
    for instant in hours(START + timedelta(days=1, hours=8), 20):
        assert tick(app, clock, instant).sent == 0  # no second email that local day
    assert sorted(_step(m) for m in smtp_server.received) == ["day01"] * 5 + ["welcome"] * 5
    with app.db.transaction() as session:
        attempts = set(session.scalars(select(Delivery.attempts)))
    assert attempts == {1}  # the outage used up nobody's attempts


def test_lines_that_begin_with_a_dot_arrive_as_written(smtp_server: SMTPServer) -> None:
    """A lone '.' line would end the message early, and a leading '.' would be lost, without
    SMTP's dot-stuffing; the server must get back exactly these bytes."""
    data = (
        b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two dots\r\nend\r\n"
        + b"x" * 76
        + b"\r\n.x" * 500
        + b"\r\n.last line"  # no final line break either
    )
    transport = SMTPTransport("127.0.0.1", smtp_server.port, security="none", timeout=5)
    with transport.open() as connection:
        connection.send(Envelope("a@example.org", "b@example.org"), data)
    [received] = smtp_server.received
    assert received.data.replace(b"\r\n", b"\n") == (data + b"\r\n").replace(b"\r\n", b"\n")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_replies_mean_the_same_with_and_without_pipelining(
    smtp_server: SMTPServer, pipelining: bool
) -> None:
    """An accepted message, a 550 5.1.1 at RCPT, a 451 at the end of DATA, a 421 4.7.0 that
    closes the session, then a message on a new connection: same outcomes either way."""
    smtp_server.handler.pipelining = pipelining
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    smtp_server.handler.rcpt_replies["busy@example.org"] = "421 4.7.0 Too busy, closing"
    data = b"Subject: hello\r\n\r\nHello.\r\n"
    transport = SMTPTransport("127.0.0.1", smtp_server.port, security="none", timeout=5)
    with transport.open() as connection:

        def send(to: str) -> None:
            connection.send(Envelope("news@example.org", to), data)

        send("first@example.org")
        with pytest.raises(PermanentFailure) as bounced:
            send("gone@example.org")
        assert (bounced.value.bounce, bounced.value.enhanced_code) == (True, "5.1.1")
        smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
        with pytest.raises(TemporaryFailure) as deferred:
            send("later@example.org")
        assert deferred.value.smtp_code == 451
        with pytest.raises(TemporaryFailure) as throttled:
            send("busy@example.org")
        assert (throttled.value.smtp_code, throttled.value.enhanced_code) == (421, "4.7.0")
        send("last@example.org")
    assert [r.recipients for r in smtp_server.received] == [
        ["first@example.org"],
        ["last@example.org"],
    ]
