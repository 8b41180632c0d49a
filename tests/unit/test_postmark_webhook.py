"""Postmark's bounce and spam-complaint webhooks, from payloads shaped as its documentation
shows: the password decides, each bounce type maps to what it means, junk is a 400."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from campaign.people.provider_webhooks import postmark, registry
from campaign.people.provider_webhooks.events import EventKind, WebhookRejected, WebhookRequest
from campaign.people.provider_webhooks.registry import providers_from_settings
from campaign.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SECRET = "s3cret-from-the-webhook-url"
URL = "https://news.example.org/webhooks/postmark"
HOOK = postmark.PostmarkWebhook(SECRET)


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _post(body: bytes | dict[str, Any], authorization: str | None = None) -> WebhookRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"content-type": "application/json"}
    headers["authorization"] = (
        _basic("postmark", SECRET) if authorization is None else authorization
    )
    return WebhookRequest(headers=headers, body=raw, url=URL)


def test_a_documented_hard_bounce_is_one_hard_bounce_event() -> None:
    """Postmark's sample bounce: its ID and recipient make the event id, its type the detail."""
    [event] = HOOK.handle(_post(_fixture("postmark_bounce.json")), NOW).events
    assert event.kind == EventKind.HARD_BOUNCE
    assert event.provider == "postmark"
    assert event.address == "john@example.com"
    assert event.event_id == "4323372036854775807:john@example.com"
    assert event.detail.startswith("HardBounce: The server was unable to deliver")


def test_a_documented_spam_complaint_is_a_complaint() -> None:
    """RecordType SpamComplaint marks the reader complained."""
    [event] = HOOK.handle(_post(_fixture("postmark_spam_complaint.json")), NOW).events
    assert (event.kind, event.address, event.event_id) == (
        EventKind.COMPLAINT,
        "john@example.com",
        "42:john@example.com",
    )


@pytest.mark.parametrize(
    ("type_name", "code", "kind"),
    [
        ("HardBounce", 1, EventKind.HARD_BOUNCE),
        ("BadEmailAddress", 100000, EventKind.HARD_BOUNCE),
        ("SoftBounce", 4096, EventKind.SOFT_BOUNCE),
        ("DnsError", 256, EventKind.SOFT_BOUNCE),
        ("Blocked", 100006, EventKind.SOFT_BOUNCE),
        ("SpamNotification", 512, EventKind.SOFT_BOUNCE),
        ("Transient", 2, None),
        ("AutoResponder", 64, None),
        ("Subscribe", 32, None),
        ("Unsubscribe", 16, None),
        ("OpenRelayTest", 1024, None),
        ("ChallengeVerification", 16384, None),
        ("VirusNotification", 8192, None),
        ("ManuallyDeactivated", 100002, None),
        ("Unknown", 2048, None),
        ("SomethingNew", 999999, None),
    ],
)
def test_each_bounce_type_maps_to_what_it_means(
    type_name: str, code: int, kind: EventKind | None
) -> None:
    """Permanent types bounce, temporary ones fail a step, the rest are not bounces at all."""
    record = {**_fixture("postmark_bounce.json"), "Type": type_name, "TypeCode": code}
    result = HOOK.handle(_post(record), NOW)
    assert [e.kind for e in result.events] == ([kind] if kind else [])
    if kind is None:
        assert result.note
        assert type_name in result.note
    # With no Type, the TypeCode alone says the same.
    del record["Type"]
    again = HOOK.handle(_post(record), NOW)
    if code in postmark.TYPE_NAMES:
        assert [e.kind for e in again.events] == [e.kind for e in result.events]


def test_other_record_types_on_the_same_url_are_ignored_not_refused() -> None:
    """A Delivery or Open post (other webhooks on the URL) is answered without events."""
    for record_type in ("Delivery", "Open", "Click", "SubscriptionChange"):
        result = HOOK.handle(_post({"RecordType": record_type, "Email": "a@example.com"}), NOW)
        assert result.events == []


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        _basic("postmark", "wrong"),
        _basic("postmark", SECRET + "x"),
        _basic("postmark", SECRET[:-1]),
        "Basic " + base64.b64encode(SECRET.encode()).decode(),  # no user:, just the secret
        "Basic !!!not-base64!!!",
        "Bearer " + SECRET,
        "Basic",
    ],
)
def test_a_post_without_the_password_is_refused_401(authorization: str) -> None:
    """Missing, forged, truncated or malformed credentials: 401, nothing read."""
    with pytest.raises(WebhookRejected) as refused:
        HOOK.handle(_post(_fixture("postmark_bounce.json"), authorization), NOW)
    assert refused.value.status == 401


def test_any_user_name_with_the_right_password_is_accepted() -> None:
    """Postmark's URL may carry any user name; the password is the secret."""
    request = _post(_fixture("postmark_bounce.json"), _basic("anything", SECRET))
    assert len(HOOK.handle(request, NOW).events) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps([{"RecordType": "Bounce"}] * 1000).encode(),
        b'"a string"',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@example.com"}',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "ID": 1}',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "ID": true, "Email": "a@example.com"}',
    ],
)
def test_a_body_postmark_does_not_send_is_refused_400(body: bytes) -> None:
    """Malformed JSON, deep nesting, arrays, and records without an ID or Email: a 400."""
    with pytest.raises(WebhookRejected) as refused:
        HOOK.handle(_post(body), NOW)
    assert refused.value.status == 400


def test_the_password_is_checked_before_the_body_is_read() -> None:
    """A forged post with junk for a body is a 401, not a 400 telling what was wrong."""
    with pytest.raises(WebhookRejected) as refused:
        HOOK.handle(_post(b"not json", _basic("x", "wrong")), NOW)
    assert refused.value.status == 401


def test_postmark_is_served_only_when_its_secret_is_set() -> None:
    """No POSTMARK_WEBHOOK_SECRET, no Postmark webhook; the secret stays out of repr."""
    env = {"SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789"}
    assert "postmark" not in providers_from_settings(Settings.from_env(env))
    configured = providers_from_settings(
        Settings.from_env({**env, "POSTMARK_WEBHOOK_SECRET": SECRET})
    )
    assert isinstance(configured["postmark"], postmark.PostmarkWebhook)
    assert SECRET not in repr(configured["postmark"])


def test_every_listed_provider_module_exposes_from_settings() -> None:
    """The registry's list names modules whose from_settings answers None when unconfigured."""
    env = {"SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789"}
    for factory in registry.FACTORIES:
        assert factory(Settings.from_env(env)) is None
