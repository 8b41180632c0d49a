"""Operators of the console: accounts (Argon2id), sign-in with its throttle, server-side
sessions and their expiry, and the audit log every change made by an operator writes to, in
the transaction of the change (`audited`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from campaign.errors import BadInput, LoginRefused, LoginThrottled
from campaign.storage import store
from campaign.storage.db import Database

#: argon2-cffi's defaults are RFC 9106's second recommended Argon2id profile (64 MiB, t=3).
PASSWORDS = PasswordHasher()
#: checked instead of a real hash when the account does not exist: the same work, so the
#: answer's timing does not tell which addresses have accounts.
_NO_ACCOUNT = PASSWORDS.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
#: the throttle's window: failed sign-ins older than this no longer count.
THROTTLE_WINDOW = timedelta(minutes=15)
#: a session's last request is noted at most this often (a write per page view is waste).
TOUCH_EVERY = timedelta(minutes=1)
#: who the command line's changes are audited as.
COMMAND_LINE = "command line"
_ACCOUNT = re.compile(r"[^\s@]{1,64}@[^\s@]{1,255}")


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions last and how many failed sign-ins are allowed per 15 minutes."""

    idle: timedelta
    absolute: timedelta
    account_attempts: int
    client_attempts: int


@dataclass(frozen=True)
class SignedIn:
    """A signed-in operator: who, and the token their forms must carry (CSRF)."""

    operator_id: int
    email: str
    csrf_token: str
    #: the session's cookie value, set only by `sign_in` (resume never sees it again).
    session_token: str = ""


@dataclass(frozen=True)
class OperatorInfo:
    email: str
    created_at: datetime
    last_login_at: datetime | None


def account_name(email: str) -> str:
    """An operator's address as kept (trimmed); BadInput naming EMAIL when it is not one."""
    email = email.strip()
    if not _ACCOUNT.fullmatch(email) or any(ord(c) < 32 for c in email):
        raise BadInput(f"EMAIL {email!r} is not an address such as ann@example.org")
    return email


def checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadInput(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadInput(f"the password must have at most {MAX_PASSWORD_CHARS} characters")
    return password


@contextmanager
def audited(db: Database, actor: str, action: str, detail: str, now: datetime) -> Iterator[Session]:
    """A transaction for one operator's change that also writes its audit entry: both are
    kept, or neither. Use cases run their change on the session it yields."""
    with db.transaction() as session:
        yield session
        store.record_audit(session, actor, action, detail, now)


def add_operator(
    db: Database, email: str, password: str, now: datetime, *, actor: str = COMMAND_LINE
) -> None:
    """Create an account; BadInput if it exists or the password is too short."""
    email = account_name(email)
    hashed = PASSWORDS.hash(checked_password(password))
    with audited(db, actor, "operator.add", email, now) as session:
        if store.find_operator(session, email) is not None:
            raise BadInput(f"an operator {email} exists already")
        store.add_operator(session, email, hashed, now)


def remove_operator(db: Database, email: str, now: datetime, *, actor: str = COMMAND_LINE) -> bool:
    """Delete an account and end its sessions; False when there was none."""
    with db.read() as session:
        known = store.find_operator(session, email.strip())
    if known is None:
        return False
    with audited(db, actor, "operator.remove", known.email, now) as session:
        store.remove_operator(session, known.id)
    return True


def list_operators(db: Database) -> list[OperatorInfo]:
    with db.read() as session:
        return [
            OperatorInfo(r.email, r.created_at, r.last_login_at)
            for r in store.list_operators(session)
        ]


def sign_in(
    db: Database,
    secret: str,
    email: str,
    password: str,
    *,
    client: str,
    now: datetime,
    policy: SessionPolicy,
) -> SignedIn:
    """Check the password and open a session; LoginThrottled past the attempts allowed for
    the account or the client in 15 minutes (checked first: a right password is refused
    too), LoginRefused for a wrong address or password (which counts as an attempt)."""
    email = email.strip()[:320]
    since = now - THROTTLE_WINDOW
    with db.read() as session:
        by_account, by_client = store.login_failures_since(session, email, client, since)
        known = store.find_operator(session, email)
    if by_account >= policy.account_attempts or by_client >= policy.client_attempts:
        raise LoginThrottled(int(THROTTLE_WINDOW.total_seconds()))
    try:
        PASSWORDS.verify(known.password_hash if known else _NO_ACCOUNT, password)
        good = known is not None
    except (VerificationError, InvalidHashError):
        good = False
    if not good or known is None:
        with db.transaction() as session:
            store.record_login_failure(session, email, client, now)
        raise LoginRefused
    token = secrets.token_urlsafe(32)
    with db.transaction() as session:
        if PASSWORDS.check_needs_rehash(known.password_hash):
            store.set_password_hash(session, known.id, PASSWORDS.hash(password))
        store.forget_login_failures(session, email, before=since)
        store.end_stale_sessions(session, now - policy.idle, now - policy.absolute)
        store.add_session(session, session_key(token), known.id, client, now)
        store.note_login(session, known.id, now)
        store.record_audit(session, known.email, "sign-in", f"from {client}", now)
    return SignedIn(known.id, known.email, csrf_token(secret, token), token)


def resume(
    db: Database, secret: str, token: str, *, now: datetime, policy: SessionPolicy
) -> SignedIn | None:
    """The operator whose session `token` names, if it has not expired (idle, or past its
    absolute lifetime); an expired session is deleted. None: sign in again."""
    if not token or len(token) > 100:
        return None
    key = session_key(token)
    with db.read() as session:
        found = store.find_session(session, key)
    if found is None:
        return None
    expired = now - found.last_seen_at > policy.idle or now - found.created_at > policy.absolute
    if expired or now - found.last_seen_at >= TOUCH_EVERY:
        with db.transaction() as session:
            if expired:
                store.end_session(session, key)
            else:
                store.touch_session(session, key, now)
    if expired:
        return None
    return SignedIn(found.operator_id, found.email, csrf_token(secret, token))


def sign_out(db: Database, token: str, actor: str, now: datetime) -> None:
    with audited(db, actor, "sign-out", "", now) as session:
        store.end_session(session, session_key(token))


def session_key(token: str) -> str:
    """What is stored of a session's id: its SHA-256 (a stolen table opens no session)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(secret: str, session_token: str) -> str:
    """The session's CSRF token: bound to it, derived with the SECRET_KEY, never stored."""
    return hmac.new(secret.encode(), b"csrf:" + session_token.encode(), "sha256").hexdigest()


def csrf_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a form's token with the session's."""
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class AuditPage:
    entries: list[store.AuditRow]
    #: the id to ask for the next (older) page with; None on the last page.
    next_before: int | None


def audit_log(db: Database, *, before_id: int | None = None, limit: int = 50) -> AuditPage:
    """The audit log, newest first, a page of `limit` entries older than `before_id`."""
    with db.read() as session:
        rows = store.audit_entries(session, before_id=before_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, rows[-1].id if more and rows else None)
