"""SendGrid's signed event webhook: only a batch signed with the key pair whose public half is
configured, signed recently, is read; its bounces, blocks, drops of bad addresses and spam
reports become events, the rest is ignored. The batches follow SendGrid's documented examples
and are signed here with a generated ECDSA P-256 key pair."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from campaign.errors import ConfigError
from campaign.people.provider_webhooks import sendgrid
from campaign.people.provider_webhooks.events import (
    EventKind,
    WebhookRejected,
    WebhookRequest,
)
from campaign.settings import Settings

NOW = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
URL = "https://news.example.org/webhooks/sendgrid"
PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())


def _public_key_text(key: Any) -> str:
    """The public key as SendGrid's Mail Settings page shows it: base64 DER, no PEM lines."""
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


PUBLIC_KEY = _public_key_text(PRIVATE_KEY)

# Events from SendGrid's Event Webhook reference, with our own Message-IDs as smtp-id.
PROCESSED = {
    "email": "example@test.com",
    "timestamp": 1792497000,
    "smtp-id": "<d42.s3@news.example.org>",
    "event": "processed",
    "category": "cat facts",
    "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A==",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
}
DEFERRED = {**PROCESSED, "event": "deferred", "sg_event_id": "t7LEShmowp86DTdUW8M-GQ=="}
DEFERRED |= {"response": "400 try again later", "attempt": "5"}
DELIVERED = {**PROCESSED, "event": "delivered", "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w=="}
DELIVERED["response"] = "250 OK"
OPEN = {
    "email": "example@test.com",
    "timestamp": 1792497010,
    "event": "open",
    "sg_machine_open": False,
    "category": "cat facts",
    "sg_event_id": "FOTFFO0ecsBE-zxFXfs6WA==",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
    "ip": "255.255.255.255",
}
BOUNCE = {
    "email": "sam@example.com",
    "timestamp": 1792497020,
    "smtp-id": "d42.s4@news.example.org",
    "event": "bounce",
    "category": "cat facts",
    "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
    "status": "5.1.1",
    "type": "bounce",
    "bounce_classification": "Invalid Address",
}
BLOCKED = {
    **BOUNCE,
    "email": "kim@example.com",
    "sg_event_id": "Ym91bmNlLTQtNTA0ODUxOTUt",
    "reason": "unable to get mx info: failed to get IPs from PTR record",
    "type": "blocked",
    "bounce_classification": "Unclassified",
}
del BLOCKED["status"]
DROPPED = {
    **PROCESSED,
    "email": "lee@example.com",
    "event": "dropped",
    "sg_event_id": "zmzJhfJgAfUSOW80yEbPyw==",
    "reason": "Bounced Address",
    "status": "5.0.0",
}
SPAMREPORT = {
    "email": "ana@example.com",
    "timestamp": 1792497030,
    "event": "spamreport",
    "sg_event_id": "37nvH5QBz858KGVYCM4uOA==",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
}


def _signed(
    body: bytes | list[Any], *, key: ec.EllipticCurvePrivateKey = PRIVATE_KEY, at: datetime = NOW
) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(at.timestamp()))
    signature = key.sign(timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    headers = {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": timestamp,
    }
    return WebhookRequest(headers=headers, body=raw, url=URL)


def _webhook(public_key: str = PUBLIC_KEY) -> sendgrid.SendGridWebhook:
    settings = Settings.from_env({"SENDGRID_WEBHOOK_PUBLIC_KEY": public_key})
    webhook = sendgrid.from_settings(settings)
    assert webhook is not None
    return webhook


def _rejected(request: WebhookRequest, now: datetime = NOW) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        _webhook().handle(request, now)
    return caught.value


def test_no_public_key_means_no_sendgrid_webhook() -> None:
    """Without SENDGRID_WEBHOOK_PUBLIC_KEY the webhook is not served at all."""
    assert sendgrid.from_settings(Settings.from_env({})) is None


def test_the_webhook_is_served_at_its_name() -> None:
    """With the key set, the provider answers at /webhooks/sendgrid."""
    assert _webhook().name == "sendgrid"


def test_a_mixed_batch_yields_only_its_bounces_and_complaints() -> None:
    """Of processed, deferred, delivered, open, bounce, block, drop and spam report, only the
    last four come out, in order, each with its own id and recipient."""
    batch = [PROCESSED, DEFERRED, DELIVERED, OPEN, BOUNCE, BLOCKED, DROPPED, SPAMREPORT]
    result = _webhook().handle(_signed(batch), NOW)
    assert [(e.kind, e.address, e.event_id) for e in result.events] == [
        (EventKind.HARD_BOUNCE, "sam@example.com", "6g4ZI7SA-xmRDv57GoPIPw=="),
        (EventKind.SOFT_BOUNCE, "kim@example.com", "Ym91bmNlLTQtNTA0ODUxOTUt"),
        (EventKind.HARD_BOUNCE, "lee@example.com", "zmzJhfJgAfUSOW80yEbPyw=="),
        (EventKind.COMPLAINT, "ana@example.com", "37nvH5QBz858KGVYCM4uOA=="),
    ]
    assert result.note == "4 events ignored"
    assert {e.provider for e in result.events} == {"sendgrid"}


def test_a_bounce_names_our_message_id_and_the_servers_answer() -> None:
    """The smtp-id comes back in brackets; the detail says bounce type and SMTP answer."""
    [event] = _webhook().handle(_signed([BOUNCE]), NOW).events
    assert event.message_ids == ("<d42.s4@news.example.org>",)
    assert event.return_paths == ()
    assert event.detail == (
        "bounce 550 5.1.1 The email account that you tried to reach does not exist."
    )
    assert event.occurred_at == datetime.fromtimestamp(1792497020, UTC)


def test_a_block_without_status_says_why() -> None:
    """SendGrid's block for a domain without MX carries no status: the reason still shows."""
    [event] = _webhook().handle(_signed([BLOCKED]), NOW).events
    assert event.detail == "blocked unable to get mx info: failed to get IPs from PTR record"


def test_a_spam_report_carries_no_message_id() -> None:
    """SendGrid's spam report has no smtp-id: the event is matched by its address alone."""
    [event] = _webhook().handle(_signed([SPAMREPORT]), NOW).events
    assert (event.kind, event.message_ids, event.detail) == (EventKind.COMPLAINT, (), "spam report")


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("Bounced Address", EventKind.HARD_BOUNCE),
        ("Invalid", EventKind.HARD_BOUNCE),
        ("Spam Reporting Address", EventKind.COMPLAINT),
        ("Unsubscribed Address", None),
        ("Spam Content (if spam checker app enabled)", None),
        ("Recipient List over Package Quota", None),
        ("Invalid SMTPAPI header", None),
    ],
)
def test_drops_count_only_when_they_are_about_the_address(
    reason: str, kind: EventKind | None
) -> None:
    """A drop for a known bounced, invalid or complaining address counts; others do not."""
    events = _webhook().handle(_signed([{**DROPPED, "reason": reason}]), NOW).events
    assert [e.kind for e in events] == ([kind] if kind else [])
    if kind:
        assert events[0].detail == f"dropped: {reason}"


def test_the_same_event_twice_in_a_batch_comes_out_once() -> None:
    """A batch repeating an sg_event_id yields that event once."""
    assert len(_webhook().handle(_signed([BOUNCE, BOUNCE]), NOW).events) == 1


def test_a_pem_public_key_is_accepted_too() -> None:
    """An operator who pastes the key with PEM lines gets the same webhook."""
    pem = PRIVATE_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    webhook = _webhook(pem.decode())
    assert len(webhook.handle(_signed([BOUNCE]), NOW).events) == 1


@pytest.mark.parametrize(
    "value",
    [
        "not a key",
        "QUJD",
        base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),
        _public_key_text(ec.generate_private_key(ec.SECP384R1())),
        _public_key_text(ed25519.Ed25519PrivateKey.generate()),
        _public_key_text(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
    # Fixed ids: the generated keys differ per collection (pytest-xdist's workers compare).
    ids=["text", "short-base64", "not-a-key-der", "p384", "ed25519", "rsa"],
)
def test_a_public_key_that_is_not_ecdsa_p256_is_a_config_error(value: str) -> None:
    """Garbage, another curve or another algorithm stops the start, naming the variable."""
    settings = Settings.from_env({"SENDGRID_WEBHOOK_PUBLIC_KEY": value})
    with pytest.raises(ConfigError) as caught:
        sendgrid.from_settings(settings)
    assert caught.value.variable == "SENDGRID_WEBHOOK_PUBLIC_KEY"
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in caught.value.message
    assert caught.value.exit_code == 2


def test_a_batch_signed_with_another_key_is_refused() -> None:
    """A batch signed by any key pair but SendGrid's is refused as unauthenticated."""
    forged = _signed([BOUNCE], key=ec.generate_private_key(ec.SECP256R1()))
    rejected = _rejected(forged)
    assert (rejected.status, rejected.reason) == (401, "signature does not match the public key")


def test_an_altered_body_is_refused() -> None:
    """Changing one byte of a signed batch breaks its signature."""
    genuine = _signed([BOUNCE])
    altered = genuine.body.replace(b"sam@example.com", b"sue@example.com")
    assert _rejected(WebhookRequest(genuine.headers, altered, URL)).status == 401


def test_a_signature_moved_to_another_timestamp_is_refused() -> None:
    """An old genuine signature under a fresh timestamp header no longer matches."""
    old = _signed([BOUNCE], at=NOW - timedelta(hours=2))
    headers = {**old.headers, "x-twilio-email-event-webhook-timestamp": str(int(NOW.timestamp()))}
    assert _rejected(WebhookRequest(headers, old.body, URL)).status == 401


@pytest.mark.parametrize(
    "header", ["x-twilio-email-event-webhook-signature", "x-twilio-email-event-webhook-timestamp"]
)
def test_a_batch_missing_a_signature_header_is_refused(header: str) -> None:
    """Both the signature and its timestamp are needed to authenticate."""
    genuine = _signed([BOUNCE])
    headers = {k: v for k, v in genuine.headers.items() if k != header}
    assert _rejected(WebhookRequest(headers, genuine.body, URL)).status == 401


@pytest.mark.parametrize("signature", ["%%%not base64%%%", "QUJD", ""])
def test_a_signature_that_is_not_a_signature_is_refused(signature: str) -> None:
    """Garbage in the signature header is a 401, not a traceback."""
    genuine = _signed([BOUNCE])
    headers = {**genuine.headers, "x-twilio-email-event-webhook-signature": signature}
    assert _rejected(WebhookRequest(headers, genuine.body, URL)).status == 401


def test_a_signed_timestamp_that_is_not_a_time_is_refused() -> None:
    """A timestamp header SendGrid never sends is refused even when signed."""
    raw = json.dumps([BOUNCE]).encode()
    signature = PRIVATE_KEY.sign(b"99999999999999" + raw, ec.ECDSA(hashes.SHA256()))
    headers = {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": "99999999999999",
    }
    assert _rejected(WebhookRequest(headers, raw, URL)).status == 401


def test_a_replayed_batch_is_refused() -> None:
    """A genuine batch signed longer ago than WEBHOOK_MAX_AGE_SECONDS is refused as a replay."""
    rejected = _rejected(_signed([BOUNCE], at=NOW - timedelta(seconds=901)))
    assert rejected.status == 401
    assert "over the 0:15:00 allowed" in rejected.reason
    recent = _signed([BOUNCE], at=NOW - timedelta(seconds=899))
    assert _webhook().handle(recent, NOW).events


def test_a_batch_signed_in_the_future_is_refused() -> None:
    """A timestamp more than the clock skew ahead of ours is refused."""
    rejected = _rejected(_signed([BOUNCE], at=NOW + timedelta(minutes=6)))
    assert (rejected.status, "in the future" in rejected.reason) == (401, True)
    assert _webhook().handle(_signed([BOUNCE], at=NOW + timedelta(minutes=4)), NOW).events


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[{not json",
        b"\xff\xfe\x00",
        b'{"event": "bounce"}',
        b"[1]",
        b"[[]]",
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"email": "x@example.com"}]',
    ],
)
def test_a_signed_body_of_the_wrong_shape_is_a_bad_request(body: bytes) -> None:
    """Malformed or deeply nested JSON, or anything but an array of events, is a 400."""
    assert _rejected(_signed(body)).status == 400


@pytest.mark.parametrize("field", ["sg_event_id", "email"])
def test_a_bounce_missing_its_fields_is_a_bad_request(field: str) -> None:
    """A bounce without its event id or recipient cannot be applied once: 400."""
    event = copy.deepcopy(BOUNCE)
    del event[field]
    rejected = _rejected(_signed([PROCESSED, event]))
    assert (rejected.status, rejected.reason) == (400, f"event 1 (bounce) has no {field}")


def test_an_oversized_batch_is_refused_whole() -> None:
    """A batch longer than any SendGrid sends is a 400, none of it applied."""
    batch = [{**BOUNCE, "sg_event_id": str(n)} for n in range(sendgrid.MAX_EVENTS + 1)]
    rejected = _rejected(_signed(batch))
    assert rejected.status == 400
    assert str(sendgrid.MAX_EVENTS) in rejected.reason


def test_the_largest_batch_is_read_in_full() -> None:
    """A batch of exactly MAX_EVENTS bounces yields them all."""
    batch = [{**BOUNCE, "sg_event_id": str(n)} for n in range(sendgrid.MAX_EVENTS)]
    assert len(_webhook().handle(_signed(batch), NOW).events) == sendgrid.MAX_EVENTS
