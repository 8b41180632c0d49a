"""The suppression list as operators see it in the console: listed and searched, an address
added by hand (reason `manual`), one cleared; each change audited in its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from campaign.domain.addresses import email_hash
from campaign.domain.statuses import SubscriberStatus, SuppressionReason
from campaign.errors import BadInput, InvalidAddress
from campaign.people.operators import audited
from campaign.people.person_fields import normalise_address
from campaign.people.subscriptions import leave
from campaign.storage import store
from campaign.storage.db import Database

PER_PAGE = 50
MAX_NOTE_CHARS = 500
MAX_SEARCH_CHARS = 320
#: a subscriber in one of these states is unsubscribed when their address is suppressed.
MAILED = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)
#: where a suppression added in the console comes from (its `source`).
CONSOLE = "console"


@dataclass(frozen=True)
class SuppressionView:
    """One suppression as the console shows it (the address is empty when only its hash is
    kept: a forgotten person, or one suppressed before the console)."""

    email_hash: str
    email: str
    reason: str
    source: str
    note: str
    created_at: datetime


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[SuppressionView]
    total: int
    page: int
    pages: int
    search: str


def search(
    db: Database, text: str = "", *, page: int = 1, per_page: int = PER_PAGE
) -> SuppressionPage:
    """Suppressions, newest first: those whose address contains `text` (any case), or, when
    `text` is a whole address, the one kept by its hash too; page `page` (from 1)."""
    text = text.strip()[:MAX_SEARCH_CHARS]
    try:
        whole = email_hash(normalise_address(text)) if "@" in text else None
    except InvalidAddress:
        whole = None
    page = max(1, page)
    with db.read() as session:
        rows, total = store.list_suppressions(
            session,
            search=text,
            email_hash=whole,
            offset=(page - 1) * per_page,
            limit=per_page,
        )
    return SuppressionPage(
        [SuppressionView(*row) for row in rows],
        total,
        page,
        max(1, -(-total // per_page)),
        text,
    )


def add(db: Database, *, actor: str, email: str, note: str, now: datetime) -> str:
    """Suppress `email` by hand: it is never mailed again, and a subscriber who has it stops
    getting email now (unsubscribed). BadInput for a bad address, a note too long, or an
    address suppressed already. Returns the address as kept."""
    address = normalise_address(email)
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise BadInput(f"note: at most {MAX_NOTE_CHARS} characters")
    key = email_hash(address)
    detail = f"{address}" + (f": {note}" if note else "")
    with audited(db, actor, "suppression.add", detail, now) as session:
        existing = store.find_suppression(session, key)
        if existing is not None:
            raise BadInput(f"{address} is suppressed already ({existing.reason})")
        store.add_suppression(
            session,
            key,
            email=address,
            reason=SuppressionReason.MANUAL,
            source=CONSOLE,
            note=note,
            now=now,
        )
        known = store.find_subscriber(session, address)
        if known is not None and known.status in (
            SubscriberStatus.ACTIVE,
            SubscriberStatus.PENDING,
        ):
            leave(session, known, now)
    return address


def clear(db: Database, *, actor: str, key: str, address: str = "", now: datetime) -> str:
    """Lift the suppression kept under hash `key` (the address, when known, may sign up or be
    imported again; a bounced or complained subscriber may come back). `address` is the
    operator's search, used when only the hash is kept. BadInput when there is none.
    Returns how the audit log names it."""
    with db.read() as session:
        found = store.find_suppression(session, key)
    if found is None:
        raise BadInput("that suppression does not exist (cleared already?)")
    email = found.email
    if not email and address:
        try:
            typed = normalise_address(address)
        except InvalidAddress:
            typed = ""
        email = typed if typed and email_hash(typed) == key else ""
    named = email or f"hash {key[:12]}…"
    with audited(db, actor, "suppression.clear", f"{named} ({found.reason})", now) as session:
        store.unsuppress(session, key)
        known = store.find_subscriber(session, email) if email else None
        if known is not None:
            store.reopen_suppressed(session, known.id, now)
    return named
