"""The subscriber directory operators browse (the console's Subscribers page): search by a
prefix of the address or the first name, one person's whole record, and the actions on a person
named by id (unsubscribe, export, forget), built on the same operations as the CLI's."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from campaign.domain.addresses import email_hash
from campaign.domain.statuses import SuppressionReason
from campaign.domain.subscriber_fields import decode
from campaign.errors import BadInput, UnknownSubscriber
from campaign.people import operators, subscriptions
from campaign.people.operators import COMMAND_LINE
from campaign.storage import store
from campaign.storage.db import Database

#: Results per page, and the most a caller may ask for.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: No address or name is longer: a longer query can match nothing.
MAX_QUERY = 320


@dataclass(frozen=True)
class Found:
    """One page of a search: its rows and the cursor of the next page (None: the last)."""

    query: str
    rows: list[store.SubscriberRow]
    next_cursor: str | None


def search(db: Database, query: str, cursor: str | None = None, limit: int = PAGE_SIZE) -> Found:
    """Subscribers whose address starts with `query`, any case, by address, then those whose
    first name does, by name; `cursor` (from the previous page) continues after it. BadInput
    names the field (`q`, `cursor`, `limit`) that is wrong."""
    text = " ".join(query.split()).lower()
    if len(text) > MAX_QUERY:
        raise BadInput(f"q: the search is longer than {MAX_QUERY} characters")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadInput(f"limit: must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
    after = _decode_cursor(cursor) if cursor else None
    with db.read() as session:
        page = store.search_subscribers(session, text, after=after, limit=limit)
    next_cursor = _encode_cursor(page.next_cursor) if page.next_cursor is not None else None
    return Found(text, page.rows, next_cursor)


def _encode_cursor(cursor: store.SearchCursor) -> str:
    text = json.dumps([cursor.phase, cursor.key, cursor.id], ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> store.SearchCursor:
    refused = BadInput("cursor: not a cursor this search gave (start the search again)")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        phase, key, ident = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error, TypeError) as exc:
        raise refused from exc
    if phase not in ("address", "name") or not isinstance(ident, int):
        raise refused
    if key is not None and (not isinstance(key, str) or len(key) > MAX_QUERY or "\x00" in key):
        raise refused
    return store.SearchCursor(phase, key, ident)


#: A stored row as plain values for a page (instants stay datetimes).
Row = dict[str, Any]


@dataclass(frozen=True)
class Person:
    """One subscriber's page: who, their consent, enrollments and every delivery (with its
    Message-ID, the server's reply or the error, when, and the links clicked in it)."""

    subscriber: Row
    suppressed: str | None
    consents: list[Row]
    enrollments: list[Row]
    deliveries: list[Row]


def person(db: Database, subscriber_id: int) -> Person:
    """The subscriber's record; UnknownSubscriber if nobody has that id (any more)."""
    with db.read() as session:
        found = store.subscriber_file(session, subscriber_id)
        if found is None:
            raise UnknownSubscriber(f"#{subscriber_id}")
        reason = store.suppression_reason(session, email_hash(found.subscriber["email"]))
    deliveries = [{**row, "resend": row["step_key"].startswith("+")} for row in found.deliveries]
    # Custom fields are kept as JSON text; shown as the values they are.
    subscriber = {**found.subscriber, "fields": decode(found.subscriber.get("fields"))}
    return Person(
        subscriber,
        str(reason) if reason else None,
        found.consents,
        found.enrollments,
        deliveries,
    )


def _known(session: Session, subscriber_id: int) -> store.SubscriberRecord:
    known = store.subscriber_by_id(session, subscriber_id)
    if known is None:
        raise UnknownSubscriber(f"#{subscriber_id}")
    return known


def unsubscribe(
    db: Database, subscriber_id: int, now: datetime, *, actor: str = COMMAND_LINE
) -> bool:
    """Stop all email to the subscriber at once (audited); False if they had already left.
    UnknownSubscriber if nobody has that id."""
    with operators.audited(db, actor, "subscriber.unsubscribe", f"#{subscriber_id}", now) as s:
        return subscriptions.leave(s, _known(s, subscriber_id), now)


def export(
    db: Database, subscriber_id: int, now: datetime, *, actor: str = COMMAND_LINE
) -> subscriptions.PersonExport:
    """Everything stored about the subscriber, as `campaign export` prints it; that it was
    exported, and by whom, goes in the audit log."""
    with operators.audited(db, actor, "subscriber.export", f"#{subscriber_id}", now) as s:
        address = _known(s, subscriber_id).email
    return subscriptions.export_person(db, address)


def forget(db: Database, subscriber_id: int, now: datetime, *, actor: str = COMMAND_LINE) -> None:
    """Erase the subscriber as `campaign forget` does: a hash of the address stays, so it is
    never mailed by mistake. The audit entry names the id, never the address."""
    with operators.audited(db, actor, "subscriber.forget", f"#{subscriber_id}", now) as s:
        known = _known(s, subscriber_id)
        store.suppress(s, email_hash(known.email), SuppressionReason.FORGOTTEN, now)
        store.delete_subscriber(s, known.id)
