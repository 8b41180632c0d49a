"""International addresses end to end (SQLite and PostgreSQL, a real SMTP server): IDNA 2008
A-labels on the wire, SMTPUTF8 for non-ASCII local parts, and every way in accepting them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_string, policy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from campaign.engine import App
from campaign.errors import UnknownSubscriber
from campaign.people import subscriptions
from campaign.storage import store
from campaign.storage.models import Delivery, Enrollment, Subscriber
from tests.acceptance.conftest import _serve
from tests.conftest import ROOT, EngineFactory
from tests.helpers import tick
from tests.smtp_server import Received, SMTPServer, free_port

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _to(received: Received) -> list[str]:
    # RFC 6532: the header may be UTF-8.
    parsed = message_from_string(received.data.decode("utf-8"), policy=policy.default)
    return [a.addr_spec for a in parsed["To"].addresses]


def _deliveries(app: App, email: str) -> list[tuple[str, str | None]]:
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
        assert known is not None
        rows = session.execute(
            select(Delivery.status, Delivery.last_error)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .where(Enrollment.subscriber_id == known.id)
        )
        return [(status, error) for status, error in rows]


@pytest.fixture
def site(engine: EngineFactory, smtp_server: SMTPServer) -> Iterator[tuple[App, httpx.Client]]:
    """The engine's public pages served by uvicorn on loopback, and a client for them."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, _ = engine(START, PUBLIC_BASE_URL=url, SIGNUP_RATE_PER_MINUTE="100")
    serving = _serve(app, port)
    next(serving)
    with httpx.Client(base_url=url, timeout=10) as client:
        yield app, client
    next(serving, None)


@pytest.fixture
def plain_relay() -> Iterator[SMTPServer]:
    """A relay that does not offer SMTPUTF8."""
    server = SMTPServer(smtputf8=False)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("pipelining", [True, False])
def test_an_international_domain_and_local_part_go_out_as_a_label_and_smtputf8(
    engine: EngineFactory, smtp_server: SMTPServer, pipelining: bool
) -> None:
    """x@straße.de is sent to xn--strae-oqa.de (never strasse.de); jürgen@ goes with SMTPUTF8."""
    smtp_server.handler.pipelining = pipelining
    app, clock = engine(START)
    for email in ("ann@Straße.DE", "Jürgen@straße.de", "plain@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Jürgen", timezone="UTC", now=START
        )
    result = tick(app, clock, START)
    assert (result.sent, result.failed, result.error) == (3, 0, None)
    by_rcpt = {r.recipients[0]: r for r in smtp_server.received}
    assert set(by_rcpt) == {"ann@xn--strae-oqa.de", "jürgen@xn--strae-oqa.de", "plain@example.org"}
    assert _to(by_rcpt["ann@xn--strae-oqa.de"]) == ["ann@xn--strae-oqa.de"]
    assert _to(by_rcpt["jürgen@xn--strae-oqa.de"]) == ["jürgen@xn--strae-oqa.de"]
    assert "SMTPUTF8" in by_rcpt["jürgen@xn--strae-oqa.de"].mail_options
    assert "SMTPUTF8" not in by_rcpt["ann@xn--strae-oqa.de"].mail_options
    assert "SMTPUTF8" not in by_rcpt["plain@example.org"].mail_options  # the next one is ASCII
    assert all(len(r.recipients) == 1 for r in smtp_server.received)
    assert b"strasse" not in b"".join(r.data for r in smtp_server.received)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_relay_without_smtputf8_fails_only_that_delivery_and_bounces_nobody(
    engine: EngineFactory, plain_relay: SMTPServer, pipelining: bool
) -> None:
    """No SMTPUTF8: ü@ fails for good with the reason, stays active, and the others go out."""
    plain_relay.handler.pipelining = pipelining
    app, clock = engine(START, SMTP_PORT=str(plain_relay.port))
    for email in ("first@example.org", "ü@example.org", "x@straße.de"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=START
        )
    result = tick(app, clock, START)
    assert (result.sent, result.failed, result.bounced, result.error) == (2, 1, 0, None)
    assert sorted(r.recipients[0] for r in plain_relay.received) == [
        "first@example.org",
        "x@xn--strae-oqa.de",
    ]
    [(status, error)] = _deliveries(app, "ü@example.org")
    assert status == "failed"
    assert error == "the relay does not offer SMTPUTF8, needed for ü@example.org"
    with app.db.transaction() as session:
        known = store.find_subscriber(session, "ü@example.org")
        assert known is not None
        assert known.status == "active"
        assert not store.is_suppressed(session, subscriptions.email_hash("ü@example.org"))


def test_signup_form_and_json_accept_international_addresses_and_find_duplicates(
    site: tuple[App, httpx.Client],
) -> None:
    """The form and the JSON API store x@Straße.DE as x@straße.de, and its A-label is the same
    person; X@STRASSE.de is someone else."""
    app, client = site
    answers = [
        client.post("/subscribe", data={"email": "x@Straße.DE"}),
        client.post("/subscribe", json={"email": "x@xn--strae-oqa.de"}),
        client.post("/subscribe", json={"email": "Ünal@Bücher.example.com"}),
        client.post("/subscribe", data={"email": "ünal@xn--bcher-kva.example.com"}),
        client.post("/subscribe", json={"email": "X@STRASSE.de"}),
    ]
    assert [a.status_code for a in answers] == [200] * 5
    with app.db.transaction() as session:
        stored = sorted(session.scalars(select(Subscriber.email)))
    assert stored == ["X@strasse.de", "x@straße.de", "ünal@bücher.example.com"]


@pytest.mark.parametrize(
    "email",
    [
        "a" * 65 + "@example.org",
        "user@localhost",
        "user@[127.0.0.1]",
        '"quoted local"@example.org',
        "x\x00@example.org",
    ],
)
def test_a_refused_address_is_a_clear_4xx_never_a_500(
    site: tuple[App, httpx.Client], email: str
) -> None:
    """Each address the rules refuse gets a 4xx answer (form and JSON), and nothing is stored."""
    app, client = site
    for answer in (
        client.post("/subscribe", data={"email": email}),
        client.post("/subscribe", json={"email": email}),
    ):
        assert 400 <= answer.status_code < 500, answer.text
    with app.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_the_cli_subscribe_and_import_accept_international_addresses(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`campaign subscribe` and `campaign import` take IDN domains and UTF-8 local parts, and
    find a duplicate spelled with the A-label."""
    environ = {**os.environ, **env, "PYTHONPATH": str(ROOT)}

    def campaign(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "campaign", *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = campaign("subscribe", "Jürgen@Straße.DE", "--name", "Jürgen")
    assert added.returncode == 0, added.stderr
    assert "jürgen@straße.de" in added.stdout
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email,first_name\n"
        "jürgen@xn--strae-oqa.de,Again\n"
        "ann@bücher.example.com,Ann\n"
        "user@[127.0.0.1],Ip\n",
        encoding="utf-8",
    )
    imported = campaign("import", str(csv_file))
    assert imported.returncode == 0, imported.stderr
    assert "added 1" in imported.stdout
    assert "people.csv:4:" in imported.stderr
    assert "bracketed IP address" in imported.stderr
    duplicate = campaign("subscribe", "jürgen@xn--strae-oqa.de")
    assert "already known" in duplicate.stdout


def test_export_and_forget_find_an_address_by_either_form_of_its_domain(
    engine: EngineFactory,
) -> None:
    """An operator may type the A-label of the domain that is stored as its U-label."""
    app, _ = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="x@Straße.DE", first_name=None, timezone=None, now=START
    )
    exported = subscriptions.export_person(app.db, "x@xn--strae-oqa.de")
    assert exported["subscriber"]["email"] == "x@straße.de"
    subscriptions.forget_person(app.db, "X@xn--STRAE-oqa.de", START)
    with pytest.raises(UnknownSubscriber):
        subscriptions.export_person(app.db, "x@straße.de")
