"""What every provider's webhook is turned into, and the seam each provider implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class EventKind(StrEnum):
    #: permanent failure: the address is bounced and suppressed.
    HARD_BOUNCE = "hard_bounce"
    #: temporary failure the provider gave up on: counts toward SOFT_BOUNCE_LIMIT.
    SOFT_BOUNCE = "soft_bounce"
    #: the recipient marked the email as spam: complained and suppressed.
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class ProviderEvent:
    """One recipient's bounce or complaint, as one provider reported it."""

    provider: str
    #: unique per provider and recipient; a retried or replayed post carries the same id, so
    #: the same event twice counts once.
    event_id: str
    kind: EventKind
    #: the recipient as the provider names it ("" when it redacts it).
    address: str
    #: what the provider says (bounce type, diagnostic code), for logs and the delivery's error.
    detail: str
    #: our own Message-IDs ("<...>") the payload carries, to match the email we sent.
    message_ids: tuple[str, ...] = ()
    #: envelope senders the payload carries (our VERP return paths), to match the email.
    return_paths: tuple[str, ...] = ()
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request as a provider's parser sees it: no framework types."""

    #: header names lowercased.
    headers: Mapping[str, str]
    body: bytes
    #: the full public URL the provider posted to (some signatures cover it).
    url: str


@dataclass(frozen=True)
class WebhookResult:
    events: list[ProviderEvent] = field(default_factory=list)
    #: what happened besides events, for the log ("SNS subscription confirmed for ARN").
    note: str | None = None
    #: a signature that does not cover the body (Mailgun's covers a timestamp and a token)
    #: names its one-time token here: the same token with another body is refused as forged.
    signature_nonce: str | None = None


class WebhookRejected(Exception):
    """The request is not from the provider (401/403) or not a payload it sends (400):
    nothing is applied, and the reason is logged, never echoed to the caller in detail."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebhookProvider(Protocol):
    """One provider's webhook: authenticate the request and read its events."""

    #: the path segment: /webhooks/<name>.
    name: str

    def handle(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Raise `WebhookRejected` for a forged, stale or malformed request."""
        ...
