"""SendGrid's signed event webhook: a JSON array of events a POST, signed with ECDSA P-256
(SHA-256) over the timestamp header followed by the raw body; bounces, blocks, drops of known
bad addresses and spam reports come out as events, the rest is acknowledged and ignored.

What each SendGrid event becomes (`event`, then `type` or `reason`):

- `bounce` of type `bounce` (or no type): the receiving server refused the address for good:
  a hard bounce.
- `bounce` of type `blocked`: the receiving server refused this message (reputation, content,
  a full mailbox) and SendGrid does not retry it: a soft bounce, counting toward
  SOFT_BOUNCE_LIMIT, since a block says little about the address itself.
- `dropped` for "Bounced Address" or "Invalid": SendGrid will not even try an address that
  bounced before or is malformed: a hard bounce. For "Spam Reporting Address": a complaint.
  Other drops ("Unsubscribed Address" of SendGrid's own groups, "Spam Content", quota, header
  errors) are about the message or the account, not the address: ignored.
- `spamreport`: a complaint.
- `deferred`: SendGrid is still retrying; it posts a bounce or drop if it gives up: ignored.
- anything else (`processed`, `delivered`, `open`, `click`, `unsubscribe`, ...): ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from campaign.errors import ConfigError
from campaign.people.provider_webhooks.events import (
    EventKind,
    ProviderEvent,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)

if TYPE_CHECKING:
    from campaign.settings import Settings

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
#: SendGrid posts a batch every 30 s or at 768 KB, a few thousand events at most: a longer
#: array is not a batch it sends, and is refused whole rather than half-read.
MAX_EVENTS = 10_000
#: a timestamp this far ahead of our clock is refused: clocks drift, but not by more.
CLOCK_SKEW = timedelta(minutes=5)
#: a detail longer than this is cut: it goes to logs and a delivery's error, not a novel.
DETAIL_LIMIT = 300

_HARD_DROPS = {"bounced address", "invalid"}
_COMPLAINT_DROPS = {"spam reporting address"}


class SendGridWebhook:
    """POST /webhooks/sendgrid: SendGrid's signed event webhook."""

    name = "sendgrid"

    def __init__(self, public_key: ec.EllipticCurvePublicKey, max_age: timedelta) -> None:
        self._public_key = public_key
        self._max_age = max_age

    def __repr__(self) -> str:
        return f"SendGridWebhook(max_age={self._max_age})"

    def handle(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Authenticate the batch and return its bounces and complaints, once each."""
        signed_at = self._authenticate(request)
        _check_fresh(signed_at, now, self._max_age)
        try:
            batch = json.loads(request.body)
        except (ValueError, RecursionError) as exc:
            raise WebhookRejected(400, "body is not JSON") from exc
        if not isinstance(batch, list):
            raise WebhookRejected(400, "body is not a JSON array of events")
        if len(batch) > MAX_EVENTS:
            raise WebhookRejected(400, f"{len(batch)} events in one batch, over {MAX_EVENTS}")
        events: list[ProviderEvent] = []
        seen: set[str] = set()
        for index, item in enumerate(batch):
            if not isinstance(item, Mapping):
                raise WebhookRejected(400, f"event {index} is not an object")
            event = read_event(item, index)
            if event is not None and event.event_id not in seen:
                seen.add(event.event_id)
                events.append(event)
        return WebhookResult(events=events, note=f"{len(batch) - len(events)} events ignored")

    def _authenticate(self, request: WebhookRequest) -> datetime:
        """The signing time of a genuinely signed request; WebhookRejected(401) otherwise."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise WebhookRejected(401, "signature or timestamp header missing")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WebhookRejected(401, "signature header is not base64") from exc
        try:
            self._public_key.verify(
                der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256())
            )
        except (InvalidSignature, ValueError) as exc:
            raise WebhookRejected(401, "signature does not match the public key") from exc
        signed_at = _occurred_at(int(timestamp)) if _is_number(timestamp) else None
        if signed_at is None:
            raise WebhookRejected(401, "timestamp header is not a time")
        return signed_at


def from_settings(settings: Settings) -> SendGridWebhook | None:
    """The SendGrid webhook, or None while SENDGRID_WEBHOOK_PUBLIC_KEY is unset; a key that
    is not an ECDSA P-256 public key is a ConfigError naming the variable, at start."""
    if settings.sendgrid_webhook_public_key is None:
        return None
    key = parse_public_key(settings.sendgrid_webhook_public_key)
    return SendGridWebhook(key, timedelta(seconds=settings.webhook_max_age_seconds))


def parse_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER, as its Mail Settings page shows it, or PEM."""
    lines = [line.strip() for line in text.strip().splitlines()]
    body = "".join(line for line in lines if not line.startswith("-----"))
    problem = (
        "is not a base64 ECDSA P-256 public key; copy the Verification Key from SendGrid's "
        "Mail Settings, Signed Event Webhook"
    )
    try:
        key = load_der_public_key(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY", problem) from exc
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY", problem)
    return key


def read_event(item: Mapping[str, Any], index: int = 0) -> ProviderEvent | None:
    """The bounce or complaint one event of a batch reports, or None for other events."""
    name = item.get("event")
    if not isinstance(name, str):
        raise WebhookRejected(400, f"event {index} has no event name")
    kind = _kind(name, _text(item.get("type")), _text(item.get("reason")))
    if kind is None:
        return None
    event_id, address = item.get("sg_event_id"), item.get("email")
    if not (isinstance(event_id, str) and event_id):
        raise WebhookRejected(400, f"event {index} ({name}) has no sg_event_id")
    if not isinstance(address, str):
        raise WebhookRejected(400, f"event {index} ({name}) has no email")
    smtp_id = item.get("smtp-id")
    return ProviderEvent(
        provider="sendgrid",
        event_id=event_id,
        kind=kind,
        address=address,
        detail=_detail(name, item),
        message_ids=(_bracketed(smtp_id),) if isinstance(smtp_id, str) and smtp_id.strip() else (),
        occurred_at=_occurred_at(item.get("timestamp")),
    )


def _kind(event: str, bounce_type: str, reason: str) -> EventKind | None:
    if event == "spamreport":
        return EventKind.COMPLAINT
    if event == "bounce":
        return EventKind.SOFT_BOUNCE if bounce_type == "blocked" else EventKind.HARD_BOUNCE
    if event == "dropped":
        if reason.strip().lower() in _HARD_DROPS:
            return EventKind.HARD_BOUNCE
        if reason.strip().lower() in _COMPLAINT_DROPS:
            return EventKind.COMPLAINT
    return None


def _detail(event: str, item: Mapping[str, Any]) -> str:
    """ "bounce 5.1.1 550 unknown recipient", "blocked 5.7.1 ...", "dropped: Bounced Address"."""
    if event == "spamreport":
        return "spam report"
    if event == "dropped":
        return f"dropped: {_text(item.get('reason'))}"[:DETAIL_LIMIT]
    status, reason = _text(item.get("status")), _text(item.get("reason"))
    words = [_text(item.get("type")) or "bounce", "" if status in reason else status, reason]
    return " ".join(" ".join(word.split()) for word in words if word)[:DETAIL_LIMIT]


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
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 12


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
