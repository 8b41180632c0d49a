"""Amazon SES (through SNS), Mailgun and SendGrid webhooks end to end, on both databases: a real
pass sends a real email to the test SMTP server; the provider's payload carries that email's
real Message-ID and VERP return path (envelope MAIL FROM), as the provider reports them, and is
posted signed to POST /webhooks/<provider> of the real ASGI app."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from campaign.clock import FixedClock
from campaign.engine import App
from campaign.interfaces.web import create_app
from campaign.people import subscriptions
from campaign.people.provider_webhooks.registry import providers_from_settings
from campaign.settings import Settings
from campaign.storage import store
from tests.conftest import ROOT, EngineFactory, sqlite_database
from tests.helpers import tick
from tests.smtp_server import Received, SMTPServer, free_port
from tests.unit.test_provider_webhooks_mailgun import KEY as MAILGUN_KEY
from tests.unit.test_provider_webhooks_mailgun import _signed as mailgun_signed
from tests.unit.test_provider_webhooks_sendgrid import PUBLIC_KEY as SENDGRID_PUBLIC_KEY
from tests.unit.test_provider_webhooks_sendgrid import _signed as sendgrid_signed
from tests.unit.test_provider_webhooks_ses import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC,
    FakeFetch,
    Signer,
)

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PROVIDERS = ("ses", "mailgun", "sendgrid")
GONE, STAYS, OTHER = "gone@example.net", "stays@example.net", "other@example.net"

#: the SNS signer, whose certificate the injected fetch serves from CERT_URL.
SNS = Signer()
Payload = tuple[bytes, dict[str, str]]


def _fetch() -> FakeFetch:
    return FakeFetch({CERT_URL: SNS.pem, SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"})


# --- each provider's payload, carrying our real Message-ID and return path as it reports them


def _ses(
    address: str,
    sent: Received,
    at: datetime,
    *,
    kind: str = "Bounce",
    bounce_type: str = "Permanent",
    sns_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    signer: Signer = SNS,
) -> Payload:
    """An SNS notification of an SES bounce or complaint (original headers not included, as
    SES's default): the Message-ID in mail.commonHeaders, our envelope sender as mail.source."""
    when = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    mail: dict[str, Any] = {
        "timestamp": when,
        "source": sent.sender,
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.org",
        "sendingAccountId": "123456789012",
        "messageId": "0100018c2b7a3f4e-5d1c0a2e-8f0b-4f53-9d2e-1a2b3c4d5e6f-000000",
        "destination": sent.recipients,
        "headersTruncated": False,
        "commonHeaders": {
            "from": [str(sent.message["From"])],
            "to": [str(sent.message["To"])],
            "subject": str(sent.message["Subject"]),
        },
    }
    if sent.message["Message-ID"] is not None:
        mail["commonHeaders"]["messageId"] = str(sent.message["Message-ID"])
    payload: dict[str, Any] = {"notificationType": kind, "mail": mail}
    if kind == "Bounce":
        payload["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1", "action": "failed"}],
            "timestamp": when,
            "feedbackId": f"fb-{sns_id}",
        }
    else:
        payload["complaint"] = {
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "timestamp": when,
            "feedbackId": f"fb-{sns_id}",
        }
    envelope = {
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(payload),
        "Timestamp": when,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }
    return _sns(signer.sign(envelope))


def _sns(envelope: dict[str, str]) -> Payload:
    headers = {
        "content-type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": envelope["Type"],
        "x-amz-sns-topic-arn": envelope["TopicArn"],
    }
    return json.dumps(envelope).encode(), headers


def _mailgun(
    address: str,
    sent: Received,
    at: datetime,
    *,
    kind: str = "Bounce",
    event_id: str = "G9Bn5sl1TC6nu79C8C0bwg",
    key: str = MAILGUN_KEY,
) -> Payload:
    """Mailgun's failed (or complained) event: the Message-ID without its brackets, as Mailgun
    writes it, and our envelope sender as envelope.sender."""
    data: dict[str, Any] = {
        "id": event_id,
        "timestamp": at.timestamp(),
        "recipient": address,
        "recipient-domain": address.partition("@")[2],
        "envelope": {"sender": sent.sender, "transport": "smtp", "targets": address},
        "message": {
            "headers": {
                "to": str(sent.message["To"]),
                "from": str(sent.message["From"]),
                "subject": str(sent.message["Subject"]),
            },
            "attachments": [],
            "size": len(sent.data),
        },
    }
    if sent.message["Message-ID"] is not None:
        bare = str(sent.message["Message-ID"]).strip().removeprefix("<").removesuffix(">")
        data["message"]["headers"]["message-id"] = bare
    if kind == "Bounce":
        data |= {"event": "failed", "severity": "permanent", "reason": "bounce"}
        data["delivery-status"] = {"code": 550, "message": "5.1.1 no such user"}
    elif kind == "Soft":
        data |= {"event": "failed", "severity": "permanent", "reason": "old"}
    else:
        data["event"] = "complained"
    return json.dumps(mailgun_signed(data, key=key, at=at)).encode(), {
        "content-type": "application/json"
    }


def _sendgrid(
    address: str,
    sent: Received,
    at: datetime,
    *,
    kind: str = "Bounce",
    event_id: str = "6g4ZI7SA-xmRDv57GoPIPw==",
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Payload:
    """SendGrid's bounce (or spam report) event: our Message-ID as smtp-id."""
    event: dict[str, Any] = {
        "email": address,
        "timestamp": int(at.timestamp()),
        "smtp-id": str(sent.message["Message-ID"]),
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    if kind == "Bounce":
        event |= {"event": "bounce", "type": "bounce", "status": "5.1.1"}
        event["reason"] = "550 5.1.1 The email account that you tried to reach does not exist."
    else:
        event["event"] = "spamreport"
    signed = sendgrid_signed([event], **({"key": key} if key is not None else {}), at=at)
    return signed.body, dict(signed.headers)


BUILDERS: dict[str, Callable[..., Payload]] = {
    "ses": _ses,
    "mailgun": _mailgun,
    "sendgrid": _sendgrid,
}


# --- the engine, the route, and what a user would look at


def _engine(engine: EngineFactory, **overrides: str) -> tuple[App, FixedClock]:
    return engine(
        START,
        SES_TOPIC_ARNS=TOPIC,
        MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
        SENDGRID_WEBHOOK_PUBLIC_KEY=SENDGRID_PUBLIC_KEY,
        SOFT_BOUNCE_LIMIT="2",
        **overrides,
    )


def _mailed(
    engine: EngineFactory, smtp: SMTPServer, *emails: str
) -> tuple[App, FixedClock, dict[str, Received]]:
    """An engine whose first pass sent each of `emails` its welcome; what the server got."""
    app, clock = _engine(engine)
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    received = {}
    for email in emails:
        [welcome] = smtp.to(email)
        received[email] = welcome
    return app, clock, received


def _post(
    app: App, provider: str, payload: Payload, fetch: FakeFetch | None = None
) -> httpx.Response:
    body, headers = payload
    providers = providers_from_settings(app.settings, fetch=fetch or _fetch())
    web = create_app(app, ROOT / "templates" / "web", webhook_providers=providers)
    asgi = httpx.ASGITransport(app=web)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=asgi, base_url="https://news.example.org") as c:
            return await c.post(f"/webhooks/{provider}", content=body, headers=headers)

    return asyncio.run(send())


def _state(app: App, email: str) -> tuple[str | None, bool]:
    """The subscriber's status and whether the address is suppressed."""
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
        suppressed = store.is_suppressed(session, subscriptions.email_hash(email))
    return (known.status if known else None), suppressed


def _id(provider: str, n: int) -> dict[str, str]:
    """The keyword giving a built payload the provider's event id number `n`."""
    return {("sns_id" if provider == "ses" else "event_id"): f"event-{n}"}


def _answer(applied: int = 0, duplicate: int = 0, not_ours: int = 0) -> dict[str, int]:
    events = applied + duplicate + not_ours
    return {"events": events, "applied": applied, "duplicate": duplicate, "not_ours": not_ours}


# --- the tests


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("kind", "status"), [("Bounce", "bounced"), ("Complaint", "complained")])
def test_a_signed_event_about_our_real_email_applies_once(
    engine: EngineFactory, smtp_server: SMTPServer, provider: str, kind: str, status: str
) -> None:
    """The post naming our real Message-ID and return path bounces (or marks complained) and
    suppresses its recipient and nobody else; the same post again is a duplicate."""
    app, _, sent = _mailed(engine, smtp_server, GONE, STAYS)
    assert sent[GONE].sender.startswith("bounces+")  # a VERP return path, not MAIL_FROM
    payload = BUILDERS[provider](GONE, sent[GONE], START, kind=kind)
    first = _post(app, provider, payload)
    assert (first.status_code, first.json()) == (200, _answer(applied=1))
    assert _state(app, GONE) == (status, True)
    assert _state(app, STAYS) == ("active", False)
    again = _post(app, provider, payload)
    assert (again.status_code, again.json()) == (200, _answer(duplicate=1))
    assert _state(app, GONE) == (status, True)
    assert _state(app, STAYS) == ("active", False)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_real_message_id_alone_or_the_return_path_alone_is_enough(
    engine: EngineFactory, smtp_server: SMTPServer, provider: str
) -> None:
    """Each clue the provider carries matches on its own: our Message-ID as the provider spells
    it, and (SES, Mailgun) our VERP return path with no Message-ID beside it."""
    app, _, sent = _mailed(engine, smtp_server, GONE, STAYS)
    welcome = sent[GONE]
    no_return_path = Received(OTHER + "-no-verp@example.org", welcome.recipients, welcome.data)
    body, headers = BUILDERS[provider](GONE, no_return_path, START)
    assert _post(app, provider, (body, headers)).json() == _answer(applied=1)
    assert _state(app, STAYS) == ("active", False)
    if provider == "sendgrid":  # SendGrid's events carry no envelope sender
        return
    without_id = welcome.data.replace(b"Message-ID:", b"X-Old-Message-ID:", 1)
    no_message_id = Received(welcome.sender, welcome.recipients, without_id)
    assert no_message_id.message["Message-ID"] is None
    payload = BUILDERS[provider](STAYS, no_message_id, START, kind="Complaint", **_id(provider, 2))
    # The return path is GONE's: for STAYS it is not ours, and nobody changes.
    assert _post(app, provider, payload).json() == _answer(not_ours=1)
    assert _state(app, STAYS) == ("active", False)
    stays = sent[STAYS]
    stays_without_id = stays.data.replace(b"Message-ID:", b"X-Old-Message-ID:", 1)
    payload = BUILDERS[provider](
        STAYS,
        Received(stays.sender, stays.recipients, stays_without_id),
        START,
        kind="Complaint",
        **_id(provider, 3),
    )
    assert _post(app, provider, payload).json() == _answer(applied=1)
    assert _state(app, STAYS) == ("complained", True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_forged_post_is_401_and_changes_nothing(
    engine: EngineFactory, smtp_server: SMTPServer, provider: str
) -> None:
    """Signed with another key, or altered after signing: refused, nobody suppressed."""
    app, _, sent = _mailed(engine, smtp_server, GONE)
    forged: list[Payload] = []
    if provider == "ses":
        forged.append(_ses(GONE, sent[GONE], START, signer=Signer()))
    elif provider == "mailgun":
        forged.append(_mailgun(GONE, sent[GONE], START, key="not-the-signing-key"))
    else:
        forged.append(
            _sendgrid(GONE, sent[GONE], START, key=ec.generate_private_key(ec.SECP256R1()))
        )
    body, headers = BUILDERS[provider](GONE, sent[GONE], START, kind="Complaint")
    if provider == "mailgun":  # its signature covers timestamp and token: alter those
        altered = json.loads(body)
        altered["signature"]["timestamp"] = str(int(altered["signature"]["timestamp"]) - 1)
        forged.append((json.dumps(altered).encode(), headers))
    else:  # SNS and SendGrid sign the body itself: one byte changed breaks it
        word = b"abuse" if provider == "ses" else b"spamreport"
        assert word in body
        forged.append((body.replace(word, word[:-1] + b"x"), headers))
    for payload in forged:
        refused = _post(app, provider, payload)
        assert (refused.status_code, refused.text) == (401, "unauthorized")
    assert _state(app, GONE) == ("active", False)
    # The genuine post is still applied: the refusals recorded nothing.
    assert _post(app, provider, (body, headers)).json() == _answer(applied=1)
    assert _state(app, GONE) == ("complained", True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_our_real_message_id_with_another_recipient_is_not_ours(
    engine: EngineFactory, smtp_server: SMTPServer, provider: str
) -> None:
    """A genuine, signed payload naming our email to GONE but the address of STAYS (whom we
    also mailed) suppresses nobody: the email was not sent to that address."""
    app, _, sent = _mailed(engine, smtp_server, GONE, STAYS)
    answer = _post(app, provider, BUILDERS[provider](STAYS, sent[GONE], START))
    assert (answer.status_code, answer.json()) == (200, _answer(not_ours=1))
    assert _state(app, STAYS) == ("active", False)
    assert _state(app, GONE) == ("active", False)


def test_an_sns_subscription_confirmation_through_the_route_is_confirmed(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """SNS's signed SubscriptionConfirmation: the route GETs its SubscribeURL, answers 200."""
    app, _ = _engine(engine)
    when = START.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": SUBSCRIBE_URL.rsplit("Token=", 1)[1],
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": when,
    }
    fetch = _fetch()
    answer = _post(app, "ses", _sns(SNS.sign(confirmation)), fetch)
    assert (answer.status_code, answer.json()) == (200, _answer())
    assert fetch.calls == [CERT_URL, SUBSCRIBE_URL]
    # Forged (another key): the SubscribeURL is never fetched.
    fetch = _fetch()
    refused = _post(app, "ses", _sns(Signer().sign(confirmation)), fetch)
    assert refused.status_code == 401
    assert SUBSCRIBE_URL not in fetch.calls


def test_an_unreachable_sns_certificate_is_503_so_sns_retries(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The certificate cannot be fetched: 503 to SNS (it retries), nothing applied; the retry,
    once the certificate is reachable, is applied."""
    app, _, sent = _mailed(engine, smtp_server, GONE)
    payload = _ses(GONE, sent[GONE], START)
    unreachable = FakeFetch({})
    answer = _post(app, "ses", payload, unreachable)
    assert (answer.status_code, answer.text) == (503, "unavailable")
    assert unreachable.calls == [CERT_URL]
    assert _state(app, GONE) == ("active", False)
    assert _post(app, "ses", payload).json() == _answer(applied=1)
    assert _state(app, GONE) == ("bounced", True)


@pytest.mark.parametrize("provider", ["ses", "mailgun"])
def test_soft_bounces_on_consecutive_steps_suppress_at_the_limit(
    engine: EngineFactory, smtp_server: SMTPServer, provider: str
) -> None:
    """SOFT_BOUNCE_LIMIT=2: a soft bounce of the welcome keeps the address; one of the next
    step too, the day after, bounces and suppresses it. Its retry changes nothing."""
    app, clock, sent = _mailed(engine, smtp_server, GONE, STAYS)
    build = BUILDERS[provider]
    soft = {"bounce_type": "Transient"} if provider == "ses" else {"kind": "Soft"}
    ids = (_id(provider, 1), _id(provider, 2))
    first = _post(app, provider, build(GONE, sent[GONE], START, **soft, **ids[0]))
    assert first.json() == _answer(applied=1)
    assert _state(app, GONE) == ("active", False)
    day1 = START + timedelta(days=1, hours=1)
    tick(app, clock, day1)
    second_email = smtp_server.to(GONE)[-1]
    assert second_email.message["Message-ID"] != sent[GONE].message["Message-ID"]
    assert second_email.sender != sent[GONE].sender  # a return path per delivery
    payload = build(GONE, second_email, day1, **soft, **ids[1])
    assert _post(app, provider, payload).json() == _answer(applied=1)
    assert _state(app, GONE) == ("bounced", True)
    assert _post(app, provider, payload).json() == _answer(duplicate=1)
    assert _state(app, STAYS) == ("active", False)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["serve", "--host", "127.0.0.1", "--port", "{port}"], id="serve"),
        pytest.param(["run", "--http", "127.0.0.1:{port}"], id="run-http"),
    ],
)
def test_a_bad_sendgrid_public_key_stops_the_service_naming_it(
    command: list[str], tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """`campaign serve` and `campaign run --http` refuse to start: exit 2, the variable named."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    environ |= {
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": sqlite_database(tmp_path),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "PUBLIC_BASE_URL": "https://news.example.org",
        "MAIL_FROM": "Clinic <newsletter@example.org>",
        "POSTAL_ADDRESS": "Clinic, 1 Test Street, Testville",
        "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        "PAGES_DIR": str(ROOT / "templates" / "web"),
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90IGEga2V5",  # base64 of "not a key"
    }
    done = subprocess.run(
        [sys.executable, "-m", "campaign", *(arg.format(port=port) for arg in command)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in done.stderr
    assert smtp_server.received == []


def test_a_captured_mailgun_signature_cannot_carry_another_event(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Mailgun signs only a timestamp and a token, not the event: whoever captured one genuine
    post could put another address's event under its signature while it is fresh. The token
    is remembered with the body it came with, so that swap is refused, while Mailgun's own
    retry of the same post (same token, same body) is still a harmless duplicate."""
    app, _, sent = _mailed(engine, smtp_server, GONE, STAYS)
    body, headers = _mailgun(GONE, sent[GONE], START, kind="Bounce")
    assert _post(app, "mailgun", (body, headers)).json() == _answer(applied=1)
    captured = json.loads(body)
    swapped_body, _ = _mailgun(STAYS, sent[STAYS], START, kind="Bounce", event_id="other-event")
    swapped = json.loads(swapped_body)
    swapped["signature"] = captured["signature"]  # the genuine signature, another event
    refused = _post(app, "mailgun", (json.dumps(swapped).encode(), headers))
    assert (refused.status_code, refused.text) == (401, "unauthorized")
    assert _state(app, STAYS) == ("active", False)
    assert _post(app, "mailgun", (body, headers)).json() == _answer(duplicate=1)
