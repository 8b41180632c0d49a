"""One bad subscriber never stops a pass (SQLite and PostgreSQL, a real SMTP server): hostile
names and addresses stored bypassing the signup checks each get their own recorded outcome,
everyone else gets their email, and a pass that dies of a bug shows in /healthz and a metric."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from email import message_from_string, policy
from email.message import EmailMessage

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from campaign.delivery.testing import RecordingTransport
from campaign.domain.addresses import wire_address
from campaign.domain.transport import Envelope
from campaign.engine import App, make_service
from campaign.errors import TemporaryFailure, UnsendableAddress
from campaign.insights import reports
from campaign.people import subscriptions
from campaign.storage import store
from campaign.storage.models import Delivery, Enrollment
from tests.acceptance.conftest import _serve
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import Received, SMTPServer, free_port

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: every header a step's message has, each once: anything else was injected.
HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "x-campaign-step",
    "content-type",
}


def _add(app: App, email: str, name: str) -> int:
    """Store a subscriber as given, bypassing every input check, and enrol them."""
    with app.db.transaction() as session:
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
    return subscriber_id


def _outcomes(app: App, subscriber_id: int) -> list[tuple[str, str | None]]:
    with app.db.transaction() as session:
        rows = session.execute(
            select(Delivery.status, Delivery.last_error)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .where(Enrollment.subscriber_id == subscriber_id)
        )
        return [(status, error) for status, error in rows]


def _parsed(received: Received) -> EmailMessage:
    # RFC 6532: headers may be UTF-8 (a non-ASCII local part in To).
    message = message_from_string(received.data.decode("utf-8"), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _assert_well_formed(received: Received) -> None:
    """One recipient, one To naming it, and no header beyond a step's own."""
    assert len(received.recipients) == 1
    message = _parsed(received)
    names = [name.lower() for name in message]
    assert sorted(names) == sorted(set(names)), names
    assert set(names) <= HEADERS, set(names) - HEADERS
    [to] = message.get_all("To") or []
    assert [a.addr_spec for a in to.addresses] == received.recipients


def test_one_bad_subscriber_of_each_kind_fails_alone(
    engine: EngineFactory, smtp_server: SMTPServer, database_url: str
) -> None:
    """Each hostile address or name gets its own outcome and reason; the pass goes on."""
    app, clock = engine(START)
    on_postgresql = database_url.startswith("postgresql")
    long_name = "Å" * (100 if on_postgresql else 10_000)  # PostgreSQL's column holds 100
    cases = {
        "x@straße.de": ("Straße", "sent"),
        "ü@example.org": ("Ünal", "sent"),
        "control@example.org": ("Eve\x07\x1b[31m\u2028\r\nBcc: v@example.net", "sent"),
        "long@example.org": (long_name, "sent"),
        "not-an-address": ("", "failed"),
        "x@-straße.de": ("", "failed"),
        "victim@evil.example y@example.org": ("", "failed"),
        "a\x01b@example.org": ("", "failed"),
        "fine@example.org": ("Fine", "sent"),
    }
    ids = {email: _add(app, email, name) for email, (name, _) in cases.items()}
    result = tick(app, clock, START)
    assert (result.sent, result.failed, result.error, result.lost) == (5, 4, None, 0)
    for email, (_, expected) in cases.items():
        [(status, error)] = _outcomes(app, ids[email])
        assert status == expected, (email, error)
        if expected == "failed":
            assert error is not None
            assert "cannot build message: cannot send to" in error
    assert sorted(r.recipients[0] for r in smtp_server.received) == sorted(
        [
            "x@xn--strae-oqa.de",
            "ü@example.org",
            "control@example.org",
            "long@example.org",
            "fine@example.org",
        ]
    )
    for received in smtp_server.received:
        _assert_well_formed(received)
    reasons = [p["reason"] for p in reports.stats(app.db, app.plan)["problems"]]
    assert any("not-an-address" in reason for reason in reasons)


# Hostile pieces, beyond arbitrary text: what attackers and old CSV files hold.
ODD_NAMES = [
    "Eve\r\nBcc: victim@example.net",
    "=?utf-8?q?x=0D=0ABcc:_victim@example.net?=",
    "{{ 7*7 }}",
    "<script>alert(1)</script>",
    "\u2028\u2029\u0085",
    "\x1b[2J",
    "‮evil",
    "x" * 300,
]
DOMAINS = [
    "example.org",
    "straße.de",
    "xn--strae-oqa.de",
    "Bücher.example.com",
    "-bad.de",
    "exa mple.org",
    "",
    "[127.0.0.1]",
    "localhost",
    "a..b",
    "ex\u200dample.org",
]


def _hostile(no_nul: bool, name_limit: int) -> st.SearchStrategy[tuple[str, str]]:
    text = st.text(max_size=60)
    if no_nul:  # PostgreSQL cannot store NUL in text: the signup checks refuse it first
        text = text.map(lambda t: t.replace("\x00", ""))
    local = st.one_of(text.filter(bool), st.sampled_from(["ü", "a b", '"q"', ".a", "a@b"]))
    address = st.one_of(st.builds(lambda lp, d: f"{lp}@{d}", local, st.sampled_from(DOMAINS)), text)
    name = st.one_of(text, st.sampled_from(ODD_NAMES), st.just("Ω" * 10_000))
    return st.tuples(address, name.map(lambda n: n[:name_limit]))


def test_hostile_subscribers_never_stop_a_pass_nor_reach_anyone_else(
    engine: EngineFactory, smtp_server: SMTPServer, database_url: str
) -> None:
    """Any text as address or name: the pass ends, everyone else gets their email, every
    message re-parses with one To and no injected header, every bad one has an outcome."""
    app, clock = engine(START)
    on_postgresql = database_url.startswith("postgresql")
    numbers = itertools.count()

    @settings(max_examples=15, deadline=None, database=None)
    @given(st.lists(_hostile(on_postgresql, 100 if on_postgresql else 10_000), max_size=4))
    def one_pass(hostile: list[tuple[str, str]]) -> None:
        before = len(smtp_server.received)
        batch = next(numbers)
        canaries = [f"canary{batch}.{n}@example.org" for n in range(2)]
        added: dict[int, str] = {}
        for n, (email, name) in enumerate(hostile):
            unique = f"h{batch}.{n}{email}"[:320]  # a unique address, hostile all the same
            added[_add(app, unique, name)] = unique
        canary_ids = [_add(app, email, "Canary") for email in canaries]
        result = tick(app, clock, START)
        assert result.error is None
        assert result.claimed == len(hostile) + 2
        new = smtp_server.received[before:]
        for canary, subscriber_id in zip(canaries, canary_ids, strict=True):
            assert [r.recipients for r in new if canary in r.recipients] == [[canary]]
            assert _outcomes(app, subscriber_id) == [("sent", None)]
        wire = {}
        for email in added.values():
            with suppress(UnsendableAddress):
                wire[wire_address(email).addr_spec] = email
        for received in new:
            _assert_well_formed(received)
            assert received.recipients[0] in wire or received.recipients[0] in canaries
        for subscriber_id, email in added.items():
            [(status, error)] = _outcomes(app, subscriber_id)
            assert status in ("sent", "failed", "bounced", "retry"), (email, status)
            assert (status == "sent") == (error is None), (email, status, error)

    one_pass()


class _Reconnecting(RecordingTransport):
    """Records messages and how many connections were opened."""

    opened: int = 0

    @contextmanager
    def open(self) -> Iterator[RecordingTransport]:
        self.opened += 1
        yield self


def test_an_unexpected_error_while_sending_retries_that_email_on_a_new_connection(
    engine: EngineFactory,
) -> None:
    """A bug met while sending one message is its retry; the next goes on a fresh session."""
    app, clock = engine(START)
    transport = _Reconnecting(failures=[RuntimeError("a bug")])
    app.dispatcher.transport = transport
    ids = [_add(app, f"p{n}@example.org", "") for n in range(3)]
    result = tick(app, clock, START)
    assert (result.sent, result.retried, result.error) == (2, 1, None)
    assert transport.opened == 2
    [(status, error)] = _outcomes(app, ids[0])
    assert (status, error) == ("retry", "unexpected error while sending: RuntimeError: a bug")


class _BrokenTransport:
    """A transport with a bug: opening it raises something no code expects."""

    description = "broken transport"

    def open(self) -> Iterator[None]:
        raise KeyError("surprise")


def test_a_pass_that_dies_of_a_bug_shows_in_healthz_and_a_metric_and_logs_once(
    engine: EngineFactory, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """/healthz says degraded with the reason, campaign_pass_errors_total counts, the traceback
    is logged once; the first good pass clears it."""
    port = free_port()
    app, _ = engine(START, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    real = app.dispatcher.transport
    app.dispatcher.transport = _BrokenTransport()  # type: ignore[assignment]
    service = make_service(app)
    serving = _serve(app, port)
    next(serving)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            with caplog.at_level(logging.DEBUG, logger="campaign.scheduler"):
                for n in range(3):
                    _add(app, f"someone{n}@example.org", "")  # the claim in flight stays held
                    assert service.run_once().error == "the last pass failed: KeyError"
            tracebacks = [r for r in caplog.records if r.exc_info]
            assert len(tracebacks) == 1
            assert "pass failed: KeyError" in tracebacks[0].getMessage()
            health = http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["reason"] == "pass-failed"
            assert app.health().detail == "the last pass failed: KeyError"  # for operators
            exposition = app.metrics.render()  # what ADMIN_LISTEN's /metrics serves
            assert b"campaign_pass_errors_total 3.0" in exposition
            app.dispatcher.transport = real
            _add(app, "next@example.org", "")
            assert service.run_once().sent == 1
            health = http.get("/healthz")
            assert (health.status_code, health.json()["status"]) == (200, "ok")
            assert health.json()["reason"] == "ok"
    finally:
        next(serving, None)


class _UnsubscribesWhileSending(RecordingTransport):
    """The subscriber unsubscribes while the server thinks; then the server defers it."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app

    def send(self, envelope: Envelope, data: bytes) -> None:
        subscriptions.unsubscribe(self.app.db, email=envelope.recipient, now=START)
        raise TemporaryFailure("451 4.3.0 try later", smtp_code=451)


def test_an_unsubscribe_during_the_smtp_reply_is_logged_as_such_not_as_a_lost_claim(
    engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The outcome cannot be recorded because the subscriber left: skipped, not "lost"."""
    app, clock = engine(START)
    app.dispatcher.transport = _UnsubscribesWhileSending(app)
    subscriber_id = _add(app, "leaver@example.org", "")
    with caplog.at_level(logging.INFO, logger="campaign.dispatch"):
        result = tick(app, clock, START)
    assert (result.lost, result.skipped, result.retried) == (0, 1, 0)
    assert "left while it was being sent" in caplog.text
    assert "lost" not in caplog.text
    assert _outcomes(app, subscriber_id) == [("skipped", "subscriber left")]
