"""Postmark's bounce and spam-complaint webhooks: one JSON record per POST, authenticated by the
HTTP Basic password Postmark sends from the webhook URL (https://any:SECRET@host/webhooks/postmark).

Postmark signs nothing, so the password is all that proves a post is Postmark's: serve the
webhook over HTTPS only. Bounce types: HardBounce and BadEmailAddress are permanent; SoftBounce,
DnsError, Blocked, DMARCPolicy and SpamNotification fail the step (counting toward
SOFT_BOUNCE_LIMIT, as a mail server's refusal does); SpamComplaint is a complaint. The rest
(Transient "message delayed", AutoResponder, Subscribe, OpenRelayTest, ChallengeVerification,
...) are not failures of an email to that address and are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import datetime
from typing import Any

from campaign.people.provider_webhooks.events import (
    EventKind,
    ProviderEvent,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)
from campaign.settings import Settings

NAME = "postmark"

#: Postmark's bounce `Type` names (and their `TypeCode`s) that we act on.
KINDS: dict[str, EventKind] = {
    "HardBounce": EventKind.HARD_BOUNCE,  # 1: unknown user, mailbox not found
    "BadEmailAddress": EventKind.HARD_BOUNCE,  # 100000: not a valid address
    "SoftBounce": EventKind.SOFT_BOUNCE,  # 4096: mailbox full, account disabled, ...
    "DnsError": EventKind.SOFT_BOUNCE,  # 256: the recipient's domain did not resolve
    "Blocked": EventKind.SOFT_BOUNCE,  # 100006: the receiving server blocked the message
    "DMARCPolicy": EventKind.SOFT_BOUNCE,  # 100009: refused by the sender's DMARC policy
    "SpamNotification": EventKind.SOFT_BOUNCE,  # 512: refused or filed as spam by the server
    "SpamComplaint": EventKind.COMPLAINT,  # 100001: the recipient marked it as spam
}
TYPE_NAMES: dict[int, str] = {
    1: "HardBounce",
    2: "Transient",
    16: "Unsubscribe",
    32: "Subscribe",
    64: "AutoResponder",
    128: "AddressChange",
    256: "DnsError",
    512: "SpamNotification",
    1024: "OpenRelayTest",
    2048: "Unknown",
    4096: "SoftBounce",
    8192: "VirusNotification",
    16384: "ChallengeVerification",
    100000: "BadEmailAddress",
    100001: "SpamComplaint",
    100002: "ManuallyDeactivated",
    100003: "Unconfirmed",
    100006: "Blocked",
    100007: "SMTPApiError",
    100008: "InboundError",
    100009: "DMARCPolicy",
    100010: "TemplateRenderingFailed",
}
#: the record types of Postmark's bounce and spam complaint webhooks; a Delivery, Open, Click
#: or SubscriptionChange post to the same URL is answered 200 and ignored.
RECORD_TYPES = ("Bounce", "SpamComplaint")


class PostmarkWebhook:
    """Postmark's webhook, for one shared Basic-auth password."""

    name = NAME

    def __init__(self, password: str) -> None:
        if not password:
            raise ValueError("the Postmark webhook password is empty")
        self._password = password.encode("utf-8")

    def __repr__(self) -> str:
        return "PostmarkWebhook(password=***)"

    def handle(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Check the password, then read the bounce or complaint the body carries."""
        self._authenticate(request.headers.get("authorization", ""))
        record = _record(request.body)
        record_type = record.get("RecordType")
        if record_type not in RECORD_TYPES:
            return WebhookResult(note=f"record type {_shown(record_type)} ignored")
        type_name = _type_name(record, record_type)
        kind = KINDS.get(type_name)
        if kind is None:
            return WebhookResult(note=f"bounce type {_shown(type_name)} ignored")
        bounce_id = record.get("ID")
        email = record.get("Email")
        if not isinstance(bounce_id, int | str) or isinstance(bounce_id, bool) or not bounce_id:
            raise WebhookRejected(400, "Postmark record without an ID")
        if not isinstance(email, str):
            raise WebhookRejected(400, "Postmark record without an Email")
        details = " ".join(
            str(record.get(name) or "") for name in ("Description", "Details") if record.get(name)
        )
        event = ProviderEvent(
            provider=NAME,
            event_id=f"{bounce_id}:{email.strip().lower()}",
            kind=kind,
            address=email.strip(),
            detail=f"{type_name}: {details}".strip(": ")[:500],
        )
        return WebhookResult(events=[event])

    def _authenticate(self, header: str) -> None:
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise WebhookRejected(401, "no HTTP Basic credentials")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WebhookRejected(401, "malformed HTTP Basic credentials") from exc
        _, colon, password = decoded.partition(b":")
        if not colon or not hmac.compare_digest(password, self._password):
            raise WebhookRejected(401, "wrong HTTP Basic password")


def _record(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WebhookRejected(400, f"body is not JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body is not a JSON object (Postmark posts one record)")
    return data


def _type_name(record: dict[str, Any], record_type: str) -> str:
    if record_type == "SpamComplaint":
        return "SpamComplaint"
    type_name = record.get("Type")
    if isinstance(type_name, str) and type_name:
        return type_name
    code = record.get("TypeCode")
    return TYPE_NAMES.get(code, "Unknown") if isinstance(code, int) else "Unknown"


def _shown(value: object) -> str:
    return repr(value)[:60]


def from_settings(settings: Settings, **injected: object) -> PostmarkWebhook | None:
    """Postmark's webhook when POSTMARK_WEBHOOK_SECRET is set, else None."""
    secret = settings.postmark_webhook_secret
    if secret is None or not secret.get_secret_value():
        return None
    return PostmarkWebhook(secret.get_secret_value())
