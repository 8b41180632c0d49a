"""The JSON API's keys: made (the token shown once), listed, revoked, and a presented token
checked. Only the SHA-256 of a token's secret is stored; it is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign.errors import BadInput
from campaign.storage import store
from campaign.storage.db import Database

TOKEN_PREFIX = "cpk"  # noqa: S105 - the tokens' visible prefix, not a secret
#: 32 random bytes: a secret nobody guesses, so one fast hash is enough to store it.
SECRET_BYTES = 32
#: how stale `last used` may get: the key's row is written at most once a minute.
LAST_USED_GRAIN = timedelta(minutes=1)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43,128}})")


@dataclass(frozen=True)
class ApiKey:
    """An API key as operators see it: never its secret."""

    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    #: the bearer token, `cpk_<id>_<secret>`: shown once, stored nowhere.
    token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _public(record: store.ApiKeyRecord) -> ApiKey:
    return ApiKey(
        record.public_id, record.name, record.created_at, record.last_used_at, record.revoked_at
    )


def checked_name(name: str) -> str:
    """A key's name: 1-100 letters, digits, dots, dashes and underscores; BadInput otherwise."""
    if not _NAME.fullmatch(name):
        shown = name.encode("unicode_escape").decode("ascii")[:120]
        raise BadInput(
            f"API key name {shown!r} is not valid: use 1-100 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def create(db: Database, name: str, now: datetime) -> NewApiKey:
    """Make a key named `name`; BadInput if the name is not valid or already taken."""
    name = checked_name(name)
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with db.transaction() as session:
        if store.api_key_named(session, name) is not None:
            raise BadInput(f"an API key named {name!r} exists already (names are never reused)")
        store.add_api_key(
            session, public_id=public_id, name=name, secret_sha256=_digest(secret), now=now
        )
    key = ApiKey(public_id, name, now, None, None)
    return NewApiKey(key, f"{TOKEN_PREFIX}_{public_id}_{secret}")


def list_keys(db: Database) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    with db.read() as session:
        return [_public(record) for record in store.api_keys(session)]


def revoke(db: Database, name_or_id: str, now: datetime) -> tuple[ApiKey, bool]:
    """Revoke the key with that name (or id): its token is refused from now on. The key, and
    False if it was revoked already; BadInput naming it if there is no such key."""
    with db.transaction() as session:
        record = store.api_key_named(session, name_or_id) or store.api_key_by_public_id(
            session, name_or_id
        )
        if record is None:
            shown = name_or_id.encode("unicode_escape").decode("ascii")[:120]
            raise BadInput(f"no API key is named (or has the id) {shown!r}: see `api-keys list`")
        if record.revoked_at is not None:
            return _public(record), False
        store.revoke_api_key(session, record.id, now)
    return _public(record._replace(revoked_at=now)), True


def authenticate(db: Database, token: str, now: datetime) -> ApiKey | None:
    """The live key `token` belongs to; None if it is malformed, unknown, forged or revoked."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    public_id, secret = match.groups()
    with db.read() as session:
        record = store.api_key_by_public_id(session, public_id)
    # Compared even for an unknown id, so that the answer's time does not tell ids apart.
    expected = record.secret_sha256 if record else "0" * 64
    good = hmac.compare_digest(_digest(secret), expected)
    if record is None or not good or record.revoked_at is not None:
        return None
    if record.last_used_at is None or record.last_used_at < now - LAST_USED_GRAIN:
        with db.transaction() as session:
            store.touch_api_key(session, record.id, now, now - LAST_USED_GRAIN)
    return _public(record._replace(last_used_at=now))
