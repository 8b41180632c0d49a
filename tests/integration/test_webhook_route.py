"""POST /webhooks/{provider} through the real ASGI app on both databases: a configured provider's
authenticated post is applied once; forged, oversize and junk posts change nothing and learn
nothing from the answer."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from campaign.engine import App
from campaign.interfaces.web import create_app
from campaign.interfaces.web.webhooks import MAX_WEBHOOK_BODY_BYTES
from campaign.people import subscriptions
from campaign.storage import store
from tests.conftest import ROOT, EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SECRET = "postmark-webhook-password-0123456789"


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"postmark:{password}".encode()).decode()


def _bounce(email: str, bounce_id: int = 1001, type_name: str = "HardBounce") -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": bounce_id,
        "Type": type_name,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "newsletter@example.org",
        "BouncedAt": "2026-12-01T10:05:00Z",
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Welcome",
    }


def _post(
    app: App,
    path: str,
    body: bytes | dict[str, Any],
    authorization: str | None = _basic(SECRET),
) -> httpx.Response:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    asgi = httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=asgi, base_url="https://news.example.org") as c:
            return await c.post(path, content=raw, headers=headers)

    return asyncio.run(send())


def _mailed(engine: EngineFactory, *emails: str, **overrides: str) -> App:
    app, clock = engine(START, POSTMARK_WEBHOOK_SECRET=SECRET, **overrides)
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    return app


def _status(app: App, email: str) -> str | None:
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
    return known.status if known else None


def _counted(app: App, outcome: str) -> float:
    labels = {"provider": "postmark", "outcome": outcome}
    return app.metrics.registry.get_sample_value("campaign_webhook_events_total", labels) or 0.0


def test_a_postmark_hard_bounce_is_applied_once_and_counted(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The first post bounces the address; Postmark's retry of it is a duplicate."""
    app = _mailed(engine, "gone@example.net", "stays@example.net")
    first = _post(app, "/webhooks/postmark", _bounce("gone@example.net"))
    assert first.status_code == 200
    assert first.json() == {"events": 1, "applied": 1, "duplicate": 0, "not_ours": 0}
    assert _status(app, "gone@example.net") == "bounced"
    assert _status(app, "stays@example.net") == "active"
    replay = _post(app, "/webhooks/postmark", _bounce("gone@example.net"))
    assert replay.status_code == 200
    assert replay.json()["duplicate"] == 1
    assert (_counted(app, "applied"), _counted(app, "duplicate")) == (1.0, 1.0)


def test_a_spam_complaint_marks_the_reader_complained(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Postmark's SpamComplaint record marks the address complained and suppresses it."""
    app = _mailed(engine, "angry@example.net")
    record = {**_bounce("angry@example.net", 77), "RecordType": "SpamComplaint"}
    record.update(Type="SpamComplaint", TypeCode=100001)
    assert _post(app, "/webhooks/postmark", record).json()["applied"] == 1
    assert _status(app, "angry@example.net") == "complained"


def test_a_forged_or_missing_password_is_401_and_changes_nothing(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The answer says only "unauthorized" and asks for Basic credentials."""
    app = _mailed(engine, "ann@example.net")
    for authorization in (_basic("guess"), None, "Basic %%%"):
        refused = _post(app, "/webhooks/postmark", _bounce("ann@example.net"), authorization)
        assert refused.status_code == 401
        assert refused.text == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert _status(app, "ann@example.net") == "active"
    assert _counted(app, "rejected") == 3.0


def test_an_unconfigured_provider_is_not_found(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Only providers whose secret is set are served; the rest are 404 like any path."""
    app, _ = engine(START)  # no POSTMARK_WEBHOOK_SECRET
    assert _post(app, "/webhooks/postmark", _bounce("a@example.net")).status_code == 404
    app = _mailed(engine)
    for path in ("/webhooks/nosuch", "/webhooks/mailgun", "/webhooks/"):
        assert _post(app, path, _bounce("a@example.net")).status_code == 404


def test_junk_and_oversize_posts_are_refused_without_detail(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Not JSON, an array, deep nesting: 400 "bad request"; more than the cap: 413."""
    app = _mailed(engine, "ann@example.net")
    for body in (b"not json", b"[" * 50_000, json.dumps([_bounce("ann@example.net")]).encode()):
        refused = _post(app, "/webhooks/postmark", body)
        assert (refused.status_code, refused.text) == (400, "bad request")
    huge = b'{"RecordType": "Bounce", "Details": "' + b"x" * MAX_WEBHOOK_BODY_BYTES + b'"}'
    assert _post(app, "/webhooks/postmark", huge).status_code == 413
    assert _status(app, "ann@example.net") == "active"


def test_a_bounce_for_an_address_we_never_mailed_suppresses_nobody(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Even Postmark, authenticated, cannot suppress an address we sent nothing to."""
    app = _mailed(engine, "ann@example.net")
    subscriptions.subscribe(
        app.db, app.plan, email="later@example.net", first_name=None, timezone="UTC", now=START
    )
    for n, email in enumerate(("stranger@example.net", "later@example.net")):
        answer = _post(app, "/webhooks/postmark", _bounce(email, 500 + n))
        assert answer.json() == {"events": 1, "applied": 0, "duplicate": 0, "not_ours": 1}
    assert _status(app, "later@example.net") == "active"
    with app.db.transaction() as session:
        assert not store.is_suppressed(session, subscriptions.email_hash("stranger@example.net"))
    assert _counted(app, "not_ours") == 2.0


def test_ignored_bounce_types_are_accepted_without_events(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """An auto-reply is answered 200 (Postmark must not retry it) and changes nothing."""
    app = _mailed(engine, "away@example.net")
    answer = _post(app, "/webhooks/postmark", _bounce("away@example.net", 9, "AutoResponder"))
    assert answer.status_code == 200
    assert answer.json()["events"] == 0
    assert _status(app, "away@example.net") == "active"
