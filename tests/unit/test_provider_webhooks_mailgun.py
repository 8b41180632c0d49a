"""Mailgun's webhook: only a post signed with our signing key, signed recently, is read; its
permanent failures and complaints become events, everything else is acknowledged and ignored.
The payloads follow Mailgun's documented examples and are signed here with a generated key."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaign.people.provider_webhooks import mailgun
from campaign.people.provider_webhooks.events import (
    EventKind,
    WebhookRejected,
    WebhookRequest,
)
from campaign.settings import Settings

NOW = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
KEY = secrets.token_hex(16)
URL = "https://news.example.org/webhooks/mailgun"

# Mailgun's "permanent failure" example, with our own Message-ID and VERP return path.
PERMANENT_FAILURE: dict[str, Any] = {
    "id": "G9Bn5sl1TC6nu79C8C0bwg",
    "timestamp": 1792497000.375624,
    "log-level": "error",
    "event": "failed",
    "severity": "permanent",
    "reason": "bounce",
    "delivery-status": {
        "attempt-no": 1,
        "message": "5.1.1 The email account that you tried to reach does not exist.",
        "code": 550,
        "bounce-code": "5.1.1",
        "description": "",
        "session-seconds": 0.43,
    },
    "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
    "envelope": {
        "sender": "bounces+d42@news.example.org",
        "transport": "smtp",
        "targets": "alice@example.com",
    },
    "message": {
        "headers": {
            "to": "Alice <alice@example.com>",
            "message-id": "20261020115500.d42.s3@news.example.org",
            "from": "Clinic <newsletter@news.example.org>",
            "subject": "Day 3: your first week",
        },
        "attachments": [],
        "size": 111,
    },
    "recipient": "alice@example.com",
    "recipient-domain": "example.com",
    "storage": {"url": "https://se.api.mailgun.net/v3/domains/x/messages/y", "key": "y"},
    "campaigns": [],
    "tags": [],
    "user-variables": {},
}

# Mailgun's "complained" example.
COMPLAINED: dict[str, Any] = {
    "id": "-Agny091SquKnsrW2NEKUA",
    "timestamp": 1792497100.0,
    "log-level": "warn",
    "event": "complained",
    "envelope": {"sending-ip": "173.193.210.33"},
    "flags": {"is-test-mode": False},
    "message": {
        "headers": {
            "to": "Alice <alice@example.com>",
            "message-id": "<20261020115500.d42.s4@news.example.org>",
            "from": "Clinic <newsletter@news.example.org>",
            "subject": "Day 4",
        },
        "attachments": [],
        "size": 111,
    },
    "recipient": "alice@example.com",
    "campaigns": [],
    "tags": [],
    "user-variables": {},
}


def _signed(
    event_data: dict[str, Any], *, key: str = KEY, at: datetime = NOW, token: str | None = None
) -> dict[str, Any]:
    timestamp = str(int(at.timestamp()))
    token = token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": digest},
        "event-data": event_data,
    }


def _request(payload: dict[str, Any] | bytes) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return WebhookRequest(headers={"content-type": "application/json"}, body=body, url=URL)


def _webhook(max_age: int = 900) -> mailgun.MailgunWebhook:
    settings = Settings.from_env(
        {"MAILGUN_WEBHOOK_SIGNING_KEY": KEY, "WEBHOOK_MAX_AGE_SECONDS": str(max_age)}
    )
    webhook = mailgun.from_settings(settings)
    assert webhook is not None
    return webhook


def _rejected(payload: dict[str, Any] | bytes, now: datetime = NOW) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        _webhook().handle(_request(payload), now)
    return caught.value


def test_no_signing_key_means_no_mailgun_webhook() -> None:
    """Without MAILGUN_WEBHOOK_SIGNING_KEY the webhook is not served at all."""
    assert mailgun.from_settings(Settings.from_env({})) is None


def test_the_webhook_is_served_at_its_name() -> None:
    """With the key set, the provider answers at /webhooks/mailgun."""
    assert _webhook().name == "mailgun"


def test_a_signed_permanent_failure_is_a_hard_bounce_of_our_email() -> None:
    """A signed permanent failure names the recipient, our Message-ID and return path, and why."""
    result = _webhook().handle(_request(_signed(PERMANENT_FAILURE)), NOW)
    [event] = result.events
    assert event.provider == "mailgun"
    assert event.kind is EventKind.HARD_BOUNCE
    assert event.address == "alice@example.com"
    assert event.event_id == "G9Bn5sl1TC6nu79C8C0bwg/alice@example.com"
    assert event.message_ids == ("<20261020115500.d42.s3@news.example.org>",)
    assert event.return_paths == ("bounces+d42@news.example.org",)
    assert event.detail == (
        "permanent 550 5.1.1 The email account that you tried to reach does not exist. (bounce)"
    )
    assert event.occurred_at == datetime.fromtimestamp(1792497000.375624, UTC)


def test_a_retried_post_carries_the_same_event_id() -> None:
    """Mailgun re-signs a retried post with a new token; the event id stays the same."""
    first = _webhook().handle(_request(_signed(PERMANENT_FAILURE)), NOW).events
    later = NOW + timedelta(minutes=10)
    again = _webhook().handle(_request(_signed(PERMANENT_FAILURE, at=later)), later).events
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_a_complaint_is_a_complaint() -> None:
    """A `complained` event is a complaint about our email, its Message-ID kept in brackets."""
    [event] = _webhook().handle(_request(_signed(COMPLAINED)), NOW).events
    assert event.kind is EventKind.COMPLAINT
    assert event.address == "alice@example.com"
    assert event.message_ids == ("<20261020115500.d42.s4@news.example.org>",)
    assert event.return_paths == ()


@pytest.mark.parametrize(
    ("severity", "reason", "kind"),
    [
        ("permanent", "suppress-bounce", EventKind.HARD_BOUNCE),
        ("permanent", "generic", EventKind.HARD_BOUNCE),
        ("permanent", "old", EventKind.SOFT_BOUNCE),
        ("permanent", "suppress-complaint", EventKind.COMPLAINT),
        ("permanent", "suppress-unsubscribe", None),
        ("temporary", "generic", None),
        ("temporary", "greylisted", None),
    ],
)
def test_failures_map_by_severity_and_reason(
    severity: str, reason: str, kind: EventKind | None
) -> None:
    """Retries under way are ignored, given-up retries are soft, the rest hard or complaints."""
    data = {**PERMANENT_FAILURE, "severity": severity, "reason": reason}
    events = _webhook().handle(_request(_signed(data)), NOW).events
    assert [e.kind for e in events] == ([kind] if kind else [])


@pytest.mark.parametrize("name", ["accepted", "delivered", "opened", "clicked", "unsubscribed"])
def test_other_events_are_acknowledged_and_ignored(name: str) -> None:
    """Deliveries, opens, clicks and Mailgun's own unsubscribes are not bounces: no event."""
    result = _webhook().handle(_request(_signed({**COMPLAINED, "event": name})), NOW)
    assert result.events == []
    assert result.note == f"ignored Mailgun event {name!r}"


def test_the_parent_account_signature_is_accepted() -> None:
    """A subaccount's event signed with the primary account's key (our key) is genuine."""
    payload = _signed(PERMANENT_FAILURE)
    payload["signature"]["parent-signature"] = payload["signature"]["signature"]
    payload["signature"]["signature"] = "0" * 64
    assert len(_webhook().handle(_request(payload), NOW).events) == 1


def test_a_signature_made_with_another_key_is_refused() -> None:
    """A post signed with any key but ours is refused as unauthenticated."""
    rejected = _rejected(_signed(PERMANENT_FAILURE, key=secrets.token_hex(16)))
    assert (rejected.status, rejected.reason) == (401, "signature does not match the signing key")


def test_a_signature_of_another_timestamp_is_refused() -> None:
    """A genuine signature moved onto a fresher timestamp no longer matches."""
    payload = _signed(PERMANENT_FAILURE, at=NOW - timedelta(hours=2))
    payload["signature"]["timestamp"] = str(int(NOW.timestamp()))
    assert _rejected(payload).status == 401


def test_a_forged_signature_is_refused() -> None:
    """A made-up hex signature is refused."""
    payload = _signed(PERMANENT_FAILURE)
    payload["signature"]["signature"] = secrets.token_hex(32)
    assert _rejected(payload).status == 401


@pytest.mark.parametrize("field", ["timestamp", "token", "signature"])
def test_a_signature_block_missing_a_field_is_refused(field: str) -> None:
    """Each of timestamp, token and signature is needed to authenticate."""
    payload = _signed(PERMANENT_FAILURE)
    del payload["signature"][field]
    assert _rejected(payload).status == 401


def test_a_post_without_a_signature_block_is_refused() -> None:
    """An unsigned event is refused as unauthenticated."""
    assert _rejected({"event-data": PERMANENT_FAILURE}).status == 401


def test_a_replayed_post_is_refused() -> None:
    """A genuine post older than WEBHOOK_MAX_AGE_SECONDS is refused as a replay."""
    payload = _signed(PERMANENT_FAILURE, at=NOW - timedelta(seconds=901))
    rejected = _rejected(payload)
    assert rejected.status == 401
    assert "over the 0:15:00 allowed" in rejected.reason
    assert (
        _webhook()
        .handle(_request(_signed(PERMANENT_FAILURE, at=NOW - timedelta(seconds=899))), NOW)
        .events
    )


def test_a_post_signed_in_the_future_is_refused() -> None:
    """A timestamp more than the clock skew ahead of ours is refused."""
    payload = _signed(PERMANENT_FAILURE, at=NOW + timedelta(minutes=6))
    rejected = _rejected(payload)
    assert rejected.status == 401
    assert "in the future" in rejected.reason
    assert (
        _webhook()
        .handle(_request(_signed(PERMANENT_FAILURE, at=NOW + timedelta(minutes=4))), NOW)
        .events
    )


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"[" * 100_000 + b"]" * 100_000],
)
def test_a_body_that_is_not_a_json_object_is_a_bad_request(body: bytes) -> None:
    """Malformed or deeply nested JSON, or JSON of the wrong shape, is a 400, not a traceback."""
    assert _rejected(body).status == 400


def test_a_signed_post_without_event_data_is_a_bad_request() -> None:
    """A genuine signature around no event is not a payload Mailgun sends."""
    payload = _signed(PERMANENT_FAILURE)
    del payload["event-data"]
    assert _rejected(payload).status == 400


@pytest.mark.parametrize("field", ["event", "id", "recipient"])
def test_a_failure_missing_its_fields_is_a_bad_request(field: str) -> None:
    """A failure without its event name, id or recipient cannot be applied once: 400."""
    data = copy.deepcopy(PERMANENT_FAILURE)
    del data[field]
    assert _rejected(_signed(data)).status == 400


def test_odd_optional_fields_do_not_break_the_event() -> None:
    """A failure without headers, envelope or a usable timestamp still names its recipient."""
    data = {
        "id": "x1",
        "event": "failed",
        "severity": "permanent",
        "recipient": "bob@example.com",
        "timestamp": 1e300,
        "message": {"headers": "not a mapping"},
        "delivery-status": None,
    }
    [event] = _webhook().handle(_request(_signed(data)), NOW).events
    assert (event.address, event.message_ids, event.return_paths) == ("bob@example.com", (), ())
    assert event.occurred_at is None
    assert event.detail == "permanent"


def test_the_signing_key_never_shows_in_the_webhook_repr() -> None:
    """The secret stays out of logs that print the provider."""
    assert KEY not in repr(_webhook())
