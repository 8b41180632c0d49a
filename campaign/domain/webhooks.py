"""Outgoing webhooks, the pure part: event types, endpoint URLs and secrets, the Standard
Webhooks signature (https://www.standardwebhooks.com/) and the retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from campaign.errors import BadInput

SUBSCRIBER_CONFIRMED = "subscriber.confirmed"
SUBSCRIBER_UNSUBSCRIBED = "subscriber.unsubscribed"
SUBSCRIBER_BOUNCED = "subscriber.bounced"
SUBSCRIBER_COMPLAINED = "subscriber.complained"
DELIVERY_SENT = "delivery.sent"
DELIVERY_FAILED = "delivery.failed"
CLICK = "click"

EVENT_TYPES = (
    SUBSCRIBER_CONFIRMED,
    SUBSCRIBER_UNSUBSCRIBED,
    SUBSCRIBER_BOUNCED,
    SUBSCRIBER_COMPLAINED,
    DELIVERY_SENT,
    DELIVERY_FAILED,
    CLICK,
)
#: what an endpoint's filter holds when it takes every event type.
ALL_EVENTS = "*"

#: the pause after each failed attempt (Standard Webhooks' reference schedule, about 28 hours
#: in all); after the last one the message is given up (failed, kept and visible).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
#: each pause is stretched or shrunk by up to this share, so endpoints that failed together
#: (an outage) are not all retried in the same second.
JITTER = 0.1

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32


class BadWebhookInput(BadInput):
    """The webhook endpoint is not valid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


def check_url(url: str) -> str:
    """`url` if it may receive webhooks: https, or http to a loopback host (a local receiver)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise BadWebhookInput("URL", f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise BadWebhookInput("URL", "must not carry a user name or password")
    if parts.scheme == "http" and not is_loopback(host):
        raise BadWebhookInput(
            "URL", f"{url!r} must use https (plain http is allowed only to a loopback host)"
        )
    return url.strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_events(names: Iterable[str] | None) -> str:
    """An endpoint's filter as stored: `*`, or `,type,type,` (so SQL can match `%,type,%`)."""
    if names is None:
        return ALL_EVENTS
    chosen = [name.strip() for name in names if name.strip()]
    if not chosen or chosen == [ALL_EVENTS]:
        return ALL_EVENTS
    unknown = [name for name in chosen if name not in EVENT_TYPES]
    if unknown:
        raise BadWebhookInput(
            "events", f"unknown event type {unknown[0]!r} (one of: {', '.join(EVENT_TYPES)})"
        )
    return "," + ",".join(dict.fromkeys(chosen)) + ","


def event_names(stored: str) -> tuple[str, ...]:
    """The event types a stored filter takes."""
    if stored == ALL_EVENTS:
        return EVENT_TYPES
    return tuple(name for name in stored.split(",") if name)


def new_secret() -> str:
    """A fresh signing secret, `whsec_` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_...` secret stands for."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise BadWebhookInput("secret", "is not whsec_ followed by base64") from exc


def new_message_id() -> str:
    """A webhook-id: unique per event, the same on every attempt to deliver it."""
    return "msg_" + secrets.token_hex(16)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: `v1,` and base64 of HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, message_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt sent at `at`."""
    timestamp = int(at.timestamp())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def payload(event_type: str, at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON body of an event: `type`, `timestamp` (when it happened) and `data`."""
    return json.dumps(
        {"type": event_type, "timestamp": iso(at), "data": dict(data)},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def next_attempt_at(failures: int, now: datetime, rng: random.Random) -> datetime | None:
    """When to try again after the `failures`-th failed attempt; None once the schedule is
    spent (the message is then given up)."""
    if failures < 1 or failures > len(RETRY_DELAYS):
        return None
    delay = RETRY_DELAYS[failures - 1].total_seconds()
    return now + timedelta(seconds=delay * (1 + rng.uniform(-JITTER, JITTER)))
