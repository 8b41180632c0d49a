"""VERP return paths and bounce reports against a real database (SQLite and PostgreSQL) and a
real SMTP server: only a report about an email we sent to that address suppresses anyone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from campaign.clock import FixedClock
from campaign.delivery.testing import RecordingTransport
from campaign.domain.verp import DELIVERY, ReturnPaths
from campaign.engine import App, return_paths
from campaign.people import bounces, signups, subscriptions
from campaign.storage import store
from tests.bounce_reports import arf, dsn
from tests.conftest import ROOT, EngineFactory
from tests.helpers import tick
from tests.smtp_server import Received, SMTPServer

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
RETURN_PATH = re.compile(r"bounces\+([dc][0-9a-f]+-[0-9a-f]{20})@example\.org")


def _welcomed(app: App, clock: FixedClock, smtp: SMTPServer, *emails: str) -> list[Received]:
    """Subscribe `emails` and run a pass: the welcome email each received, in order."""
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    return [smtp.to(email)[-1] for email in emails]


def _ingest(app: App, tmp_path: Path, *reports: bytes) -> bounces.IngestReport:
    folder = tmp_path / "reports"
    folder.mkdir(exist_ok=True)
    for n, report in enumerate(reports):
        (folder / f"{n:03d}.eml").write_bytes(report)
    return bounces.ingest(app.db, [folder], START, return_paths=return_paths(app.settings))


def _status(app: App, email: str) -> str | None:
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
    return known.status if known else None


def test_every_email_leaves_from_a_verp_return_path_with_its_headers_unchanged(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """MAIL FROM is `bounces+TOKEN@` the MAIL_FROM domain; From: and To: stay as they were."""
    app, clock = engine(START)
    [welcome] = _welcomed(app, clock, smtp_server, "ann@example.net")
    found = RETURN_PATH.fullmatch(welcome.sender)
    assert found, welcome.sender
    assert found.group(1).startswith(DELIVERY)
    assert len(welcome.sender.split("@")[0]) <= 64
    assert welcome.message["From"] == "Pain & Injury Doctor <newsletter@example.org>"
    assert welcome.message["To"] == "Sam <ann@example.net>"
    assert welcome.recipients == ["ann@example.net"]


def test_the_confirmation_email_has_its_own_return_path_and_bounce_domain(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The double opt-in email leaves from a confirmation token at BOUNCE_DOMAIN when set."""
    app, _ = engine(START, BOUNCE_DOMAIN="Bounces.Example.COM")
    app.signups.signup(
        email="new@example.net", first_name="", timezone="UTC", visitor=signups.Visitor(), now=START
    )
    app.signup_mail.drain(START)  # the engine sends what the signup queued
    [confirmation] = smtp_server.to("new@example.net")
    assert re.fullmatch(
        r"bounces\+c[0-9a-f]+-[0-9a-f]{20}@bounces\.example\.com", confirmation.sender
    )
    assert confirmation.message["From"] == "Pain & Injury Doctor <newsletter@example.org>"


def test_a_bounce_of_a_message_the_server_received_suppresses_its_recipient(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A DSN delivered to the real return path, naming its recipient, bounces and suppresses."""
    app, clock = engine(START)
    [gone, _] = _welcomed(app, clock, smtp_server, "gone@example.net", "stays@example.net")
    report = _ingest(
        app, tmp_path, dsn(delivered_to=gone.sender, final_recipient="GONE@example.net")
    )
    assert len(report.bounced) == 1
    [(_, verdict, what)] = report.outcomes
    assert (verdict, what.split(" (")[0]) == ("applied", "bounced gone@example.net")
    assert _status(app, "gone@example.net") == "bounced"
    assert _status(app, "stays@example.net") == "active"
    with app.db.transaction() as session:
        assert store.is_suppressed(session, subscriptions.email_hash("gone@example.net"))


def test_a_complaint_about_a_message_we_sent_is_believed_by_its_message_id(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """An ARF report to the abuse address, returning our message whole, marks its reader."""
    app, clock = engine(START)
    [angry] = _welcomed(app, clock, smtp_server, "angry@example.net")
    report = _ingest(app, tmp_path, arf(original=angry.data))
    assert len(report.complained) == 1, report.outcomes
    assert _status(app, "angry@example.net") == "complained"


def test_a_complaint_with_the_recipient_redacted_is_resolved_from_our_return_path(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A provider that hides the recipient still names our return path: that reader is marked."""
    app, clock = engine(START)
    [angry, _] = _welcomed(app, clock, smtp_server, "angry@example.net", "calm@example.net")
    headers = b"From: newsletter@example.org\r\nTo: redacted@example.net\r\n\r\nHi\r\n"
    report = _ingest(app, tmp_path, arf(original=headers, mail_from=angry.sender))
    # The report names redacted@: the token is for angry@, so nobody is marked.
    assert report.complained == []
    redacted = headers.replace(b"To: redacted@example.net\r\n", b"")
    report = _ingest(app, tmp_path, arf(original=redacted, mail_from=angry.sender))
    assert _status(app, "angry@example.net") == "complained"
    assert _status(app, "calm@example.net") == "active"


def test_a_bounce_of_the_confirmation_email_suppresses_the_pending_address(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """The confirmation's return path is ours too: its bounce stops a mistyped address."""
    app, _ = engine(START)
    app.signups.signup(
        email="typo@example.net",
        first_name="",
        timezone="UTC",
        visitor=signups.Visitor(),
        now=START,
    )
    app.signup_mail.drain(START)  # the engine sends what the signup queued
    [confirmation] = smtp_server.to("typo@example.net")
    report = _ingest(
        app, tmp_path, dsn(delivered_to=confirmation.sender, final_recipient="typo@example.net")
    )
    assert len(report.bounced) == 1, report.outcomes
    assert _status(app, "typo@example.net") == "bounced"


def test_a_forged_bounce_with_no_token_suppresses_nobody(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """The DSN anyone could write, naming a real subscriber, is counted as not ours."""
    app, clock = engine(START)
    _welcomed(app, clock, smtp_server, "gone@example.org", "angry@example.org")
    fixtures = ROOT / "tests" / "fixtures"
    report = bounces.ingest(app.db, [fixtures], START, return_paths=return_paths(app.settings))
    assert report.bounced == report.complained == []
    assert len(report.not_ours) == 2
    reasons = " | ".join(report.not_ours)
    assert "gone@example.org (no VERP token and no Message-ID of an email we sent)" in reasons
    assert "angry@example.org (its Message-ID is not in the delivery log)" in reasons
    assert _status(app, "gone@example.org") == _status(app, "angry@example.org") == "active"


def test_forged_random_and_truncated_tokens_suppress_nobody(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A made-up token, a real one cut short or with one character changed, a token signed
    with another key: each is not ours, with its reason."""
    app, clock = engine(START)
    [victim] = _welcomed(app, clock, smtp_server, "victim@example.net")
    real = RETURN_PATH.fullmatch(victim.sender)
    assert real
    token = real.group(1)
    flipped = token[:-1] + ("a" if token[-1] != "a" else "b")
    other_key = ReturnPaths("another-secret-key-of-at-least-32-chars!", "example.org")
    forgeries = [
        "bounces+d1-" + "a" * 20 + "@example.org",
        f"bounces+{token[:-3]}@example.org",
        f"bounces+{flipped}@example.org",
        other_key.return_path(DELIVERY, 1, "victim@example.net"),
        "bounces+@example.org",
        "bounces+" + "d" * 60 + "@example.org",
    ]
    report = _ingest(
        app,
        tmp_path,
        *[dsn(delivered_to=f, final_recipient="victim@example.net") for f in forgeries],
    )
    assert report.bounced == []
    reasons = [what for _, verdict, what in report.outcomes if verdict == "not ours"]
    assert len(reasons) == len(forgeries)
    assert "truncated" in reasons[1]
    assert "does not verify" in reasons[2]
    assert "does not verify" in reasons[3]
    assert _status(app, "victim@example.net") == "active"


def test_a_real_token_replayed_for_another_recipient_suppresses_neither(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Mallory's own return path in a DSN naming the victim: not ours, and Mallory stays too."""
    app, clock = engine(START)
    [mallory, _] = _welcomed(app, clock, smtp_server, "mallory@example.net", "victim@example.net")
    report = _ingest(
        app,
        tmp_path,
        dsn(
            delivered_to=mallory.sender, final_recipient="victim@example.net", original=mallory.data
        ),
    )
    [(_, verdict, what)] = report.outcomes
    assert verdict == "not ours"
    assert "for an email to another address" in what
    assert "Message-ID is of an email to another address" in what
    assert _status(app, "victim@example.net") == _status(app, "mallory@example.net") == "active"


def test_another_subscribers_message_id_suppresses_nobody(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A complaint naming the victim, returning Mallory's message (its Message-ID), is not ours."""
    app, clock = engine(START)
    [mallory, _] = _welcomed(app, clock, smtp_server, "mallory@example.net", "victim@example.net")
    forged = mallory.data.replace(b"To: Sam <mallory@example.net>", b"To: victim@example.net")
    assert forged != mallory.data
    report = _ingest(app, tmp_path, arf(original=forged))
    assert report.complained == []
    assert "Message-ID is of an email to another address" in report.not_ours[0]
    assert _status(app, "victim@example.net") == "active"


def test_a_dsn_about_two_recipients_applies_only_to_the_one_we_mailed(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A genuine DSN with a second, added recipient block bounces only the real recipient."""
    app, clock = engine(START)
    [gone, _] = _welcomed(app, clock, smtp_server, "gone@example.net", "victim@example.net")
    report_bytes = dsn(delivered_to=gone.sender, final_recipient="gone@example.net")
    extra = (
        b"\r\nFinal-Recipient: rfc822; victim@example.net\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\n\r\n--R1\r\nContent-Type: text/rfc822-headers"
    )
    report_bytes = report_bytes.replace(b"\r\n--R1\r\nContent-Type: text/rfc822-headers", extra, 1)
    report = _ingest(app, tmp_path, report_bytes)
    assert [v for _, v, _ in report.outcomes] == ["applied", "not ours"]
    assert _status(app, "gone@example.net") == "bounced"
    assert _status(app, "victim@example.net") == "active"


def test_a_bounce_naming_the_a_label_of_an_international_domain_finds_its_subscriber(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """A report for `x@xn--strae-oqa.de` bounces the subscriber stored as `x@straße.de`, and one
    for `x@strasse.de` (another domain) is not ours."""
    transport = RecordingTransport()
    app, clock = engine(START, transport)
    subscriptions.subscribe(
        app.db, app.plan, email="x@straße.de", first_name="", timezone="UTC", now=START
    )
    tick(app, clock, START)
    [sent] = transport.sent
    wrong = dsn(delivered_to=sent.envelope.sender, final_recipient="x@strasse.de")
    right = dsn(delivered_to=sent.envelope.sender, final_recipient="x@xn--strae-oqa.de")
    report = _ingest(app, tmp_path, wrong, right)
    assert [verdict for _, verdict, _ in report.outcomes] == ["not ours", "applied"]
    assert _status(app, "x@straße.de") == "bounced"
