"""Mailgun's webhooks: one event a POST, signed inside the body with HMAC-SHA256 of timestamp
and token under the HTTP webhook signing key; permanent failures and complaints come out as
events, everything else (deliveries, opens, retries still under way) is acknowledged and ignored.

What each Mailgun event becomes (`event-data.event`, `severity`, `reason`):

- `failed`, permanent, reason `old`: Mailgun retried a temporary failure until it gave up:
  a soft bounce (it counts toward SOFT_BOUNCE_LIMIT, as a soft bounce from a report file does).
- `failed`, permanent, reason `suppress-complaint`: not sent, the address complained before:
  a complaint.
- `failed`, permanent, reason `suppress-unsubscribe`: not sent, the address unsubscribed through
  Mailgun's own lists; that is not a bounce, and our unsubscribe links are our own: ignored.
- `failed`, permanent, any other reason (`bounce`, `suppress-bounce`, ...): a hard bounce.
- `failed`, temporary: Mailgun is still retrying; it posts a permanent failure if it gives up.
- `complained`: a complaint.
- anything else (`accepted`, `delivered`, `opened`, `clicked`, `unsubscribed`, ...): ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from campaign.people.provider_webhooks.events import (
    EventKind,
    ProviderEvent,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)

if TYPE_CHECKING:
    from campaign.settings import Settings

#: a timestamp this far ahead of our clock is refused: clocks drift, but not by more.
CLOCK_SKEW = timedelta(minutes=5)
#: a detail longer than this is cut: it goes to logs and a delivery's error, not a novel.
DETAIL_LIMIT = 300


class MailgunWebhook:
    """POST /webhooks/mailgun: Mailgun's signed JSON event webhook."""

    name = "mailgun"

    def __init__(self, signing_key: bytes, max_age: timedelta) -> None:
        self._signing_key = signing_key
        self._max_age = max_age

    def __repr__(self) -> str:
        return f"MailgunWebhook(max_age={self._max_age})"

    def handle(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Authenticate the posted event and return it when it is a bounce or a complaint."""
        payload = _json_object(request.body)
        signed_at, token = self._authenticate(payload.get("signature"))
        _check_fresh(signed_at, now, self._max_age)
        data = payload.get("event-data")
        if not isinstance(data, Mapping):
            raise WebhookRejected(400, "no event-data object")
        event = read_event(data)
        # The signature covers the timestamp and token only, not the event: the token is
        # remembered with this body so a captured signature cannot carry another event.
        if event is None:
            note = f"ignored Mailgun event {_text(data.get('event'))!r}"
            return WebhookResult(note=note, signature_nonce=token)
        return WebhookResult(events=[event], signature_nonce=token)

    def _authenticate(self, block: object) -> tuple[datetime, str]:
        """The signing time and token of a genuine signature block; WebhookRejected(401)
        otherwise."""
        if not isinstance(block, Mapping):
            raise WebhookRejected(401, "no signature block")
        timestamp, token = block.get("timestamp"), block.get("token")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not (isinstance(timestamp, str) and timestamp.isascii() and timestamp.isdigit()):
            raise WebhookRejected(401, "signature timestamp missing or not a number")
        if len(timestamp) > 12:
            raise WebhookRejected(401, "signature timestamp is out of range")
        if not (isinstance(token, str) and token):
            raise WebhookRejected(401, "signature token missing")
        expected = hmac.new(
            self._signing_key, (timestamp + token).encode(), hashlib.sha256
        ).hexdigest()
        # A subaccount's events carry the primary account's signature too: either key will do.
        offered = [block.get(field) for field in ("signature", "parent-signature")]
        genuine = [
            hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))
            for value in offered
            if isinstance(value, str)
        ]
        if not any(genuine):
            raise WebhookRejected(401, "signature does not match the signing key")
        return _unix_time(int(timestamp), "signature timestamp", status=401), token


def from_settings(settings: Settings) -> MailgunWebhook | None:
    """The Mailgun webhook, or None while MAILGUN_WEBHOOK_SIGNING_KEY is unset."""
    if settings.mailgun_webhook_signing_key is None:
        return None
    key = settings.mailgun_webhook_signing_key.get_secret_value().strip().encode()
    return MailgunWebhook(key, timedelta(seconds=settings.webhook_max_age_seconds))


def read_event(data: Mapping[str, Any]) -> ProviderEvent | None:
    """The bounce or complaint one `event-data` object reports, or None for other events."""
    name = data.get("event")
    if not isinstance(name, str):
        raise WebhookRejected(400, "event-data.event missing")
    kind = _kind(name, _text(data.get("severity")), _text(data.get("reason")))
    if kind is None:
        return None
    event_id, recipient = data.get("id"), data.get("recipient")
    if not (isinstance(event_id, str) and event_id):
        raise WebhookRejected(400, "event-data.id missing")
    if not isinstance(recipient, str):
        raise WebhookRejected(400, "event-data.recipient missing")
    envelope = data.get("envelope")
    sender = envelope.get("sender") if isinstance(envelope, Mapping) else None
    return ProviderEvent(
        provider="mailgun",
        # Mailgun's id is unique per day and per event; with the recipient it names this one.
        event_id=f"{event_id}/{recipient.lower()}",
        kind=kind,
        address=recipient,
        detail=_detail(name, data),
        message_ids=_message_ids(data.get("message")),
        return_paths=(sender,) if isinstance(sender, str) and "@" in sender else (),
        occurred_at=_occurred_at(data.get("timestamp")),
    )


def _kind(event: str, severity: str, reason: str) -> EventKind | None:
    if event == "complained":
        return EventKind.COMPLAINT
    if event != "failed" or severity != "permanent":
        return None
    if reason == "old":
        return EventKind.SOFT_BOUNCE
    if reason == "suppress-complaint":
        return EventKind.COMPLAINT
    if reason == "suppress-unsubscribe":
        return None
    return EventKind.HARD_BOUNCE


def _detail(event: str, data: Mapping[str, Any]) -> str:
    """ "permanent 550 5.1.1 The email account ... (bounce)", or "complaint"."""
    if event == "complained":
        return "complaint"
    status = data.get("delivery-status")
    status = status if isinstance(status, Mapping) else {}
    code = status.get("code")
    words = [
        _text(data.get("severity")),
        str(code) if isinstance(code, int) and not isinstance(code, bool) else "",
        _text(status.get("message")) or _text(status.get("description")),
    ]
    reason = _text(data.get("reason"))
    detail = " ".join(" ".join(word.split()) for word in words if word)
    if reason:
        detail = f"{detail} ({reason})"
    return detail[:DETAIL_LIMIT]


def _message_ids(message: object) -> tuple[str, ...]:
    headers = message.get("headers") if isinstance(message, Mapping) else None
    value = headers.get("message-id") if isinstance(headers, Mapping) else None
    return (_bracketed(value),) if isinstance(value, str) and value.strip() else ()


def _bracketed(message_id: str) -> str:
    """A Message-ID as we wrote it, "<...>", however the provider spells it."""
    return f"<{message_id.strip().removeprefix('<').removesuffix('>')}>"


def _check_fresh(signed_at: datetime, now: datetime, max_age: timedelta) -> None:
    """Refuse a replayed (too old) or impossibly dated signature: WebhookRejected(401)."""
    if now - signed_at > max_age:
        raise WebhookRejected(401, f"signed {now - signed_at} ago, over the {max_age} allowed")
    if signed_at - now > CLOCK_SKEW:
        raise WebhookRejected(401, f"signed {signed_at - now} in the future")


def _occurred_at(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return _unix_time(value, "event-data.timestamp", status=400)
    except WebhookRejected:
        return None


def _unix_time(value: float, what: str, *, status: int) -> datetime:
    try:
        if not math.isfinite(value):
            raise ValueError(value)
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise WebhookRejected(status, f"{what} is out of range") from exc


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WebhookRejected(400, "body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    return payload


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
