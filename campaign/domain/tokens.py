"""Signed tokens for links: HMAC-SHA256 over (purpose, subject id, issue time), unforgeable."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from campaign.errors import InvalidToken

#: What a confirmation link's token is for. It names a confirmation row, never reused, not a
#: subscriber (links before schema 0008 did, as "confirm", a purpose nothing verifies now).
CONFIRM_SIGNUP = "confirm-signup"
#: What a "view in browser" link's token is for: one subscriber's emails of one plan (its id
#: the signed data); the step is named in the URL beside it.
VIEW = "view"


@dataclass(frozen=True)
class TokenClaims:
    purpose: str
    subject_id: int
    issued_at: datetime
    #: signed extra text, e.g. the one URL a click link may redirect to.
    data: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).digest()
    return _b64(digest[:20])


def sign(secret: str, purpose: str, subject_id: int, issued_at: datetime, data: str = "") -> str:
    """A URL-safe token binding `purpose` (e.g. "unsubscribe") to `subject_id` (and `data`)."""
    payload = f"{purpose}.{subject_id}.{int(issued_at.timestamp())}"
    if data:
        payload += "." + _b64(data.encode("utf-8"))
    return f"{_b64(payload.encode('ascii'))}.{_mac(secret, payload)}"


def verify(
    secret: str, token: str, purpose: str, now: datetime, max_age: timedelta | None = None
) -> TokenClaims:
    """The claims of a genuine, unexpired token for `purpose`; InvalidToken otherwise."""
    try:
        encoded, mac = token.split(".", 1)
        payload = _unb64(encoded).decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise InvalidToken() from exc
    # The MAC is checked before anything in the payload is trusted or parsed; compare_digest
    # (on bytes, so any text is comparable) takes the same time however much of a forgery is right.
    if not hmac.compare_digest(mac.encode("utf-8"), _mac(secret, payload).encode("ascii")):
        raise InvalidToken()
    try:
        token_purpose, subject, issued, *extra = payload.split(".")
        if len(extra) > 1:
            raise ValueError("too many parts")
        data = _unb64(extra[0]).decode("utf-8") if extra else ""
        claims = TokenClaims(
            token_purpose, int(subject), datetime.fromtimestamp(int(issued), UTC), data
        )
    except (ValueError, OverflowError, OSError, UnicodeError) as exc:
        raise InvalidToken() from exc
    if claims.purpose != purpose:
        raise InvalidToken()
    if max_age is not None and now - claims.issued_at > max_age:
        raise InvalidToken("This link has expired.")
    return claims
