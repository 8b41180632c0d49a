"""Tracked links (TRACK_CLICKS=true): count a click, then send the reader where the email said."""

from __future__ import annotations

from datetime import datetime

from campaign.domain import tokens
from campaign.errors import InvalidToken
from campaign.storage import store
from campaign.storage.db import Database


def follow(db: Database, secret_key: str, token: str, now: datetime) -> str:
    """The URL a click token was signed for, after counting the click; InvalidToken otherwise.

    The target travels inside the signed token, so a redirect can only ever lead to a URL
    that was in the email: no open redirect.
    """
    claims = tokens.verify(secret_key, token, "click", now)
    if not claims.data.startswith(("https://", "http://")):
        raise InvalidToken()
    with db.transaction() as session:
        store.record_click(session, claims.subject_id, claims.data, now)
    return claims.data
