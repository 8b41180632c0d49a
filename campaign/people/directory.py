"""The subscriber directory operators browse (the console's Subscribers page): search by a
prefix of the address or the first name, one person's whole record, and the actions on a person
named by id (unsubscribe, export, forget), built on the same operations as the CLI's."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaign.domain.addresses import email_hash
from campaign.errors import BadInput, UnknownSubscriber
from campaign.people import subscriptions
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
    """Subscribers whose address or first name starts with `query`, any case, ordered by
    address; `cursor` (from the previous page) continues after it. BadInput names the field
    (`q`, `cursor`, `limit`) that is wrong."""
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


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise BadInput("cursor: not a cursor this search gave (start the search again)") from exc
    if len(key) > MAX_QUERY or "\x00" in key:
        raise BadInput("cursor: not a cursor this search gave (start the search again)")
    return key


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
    return Person(
        found.subscriber,
        str(reason) if reason else None,
        found.consents,
        found.enrollments,
        deliveries,
    )


def _address(db: Database, subscriber_id: int) -> str:
    with db.read() as session:
        known = store.subscriber_by_id(session, subscriber_id)
    if known is None:
        raise UnknownSubscriber(f"#{subscriber_id}")
    return known.email


def unsubscribe(db: Database, subscriber_id: int, now: datetime) -> bool:
    """Stop all email to the subscriber at once; False if they had already left.
    UnknownSubscriber if nobody has that id."""
    _address(db, subscriber_id)
    return subscriptions.unsubscribe_subscriber(db, subscriber_id, now)


def export(db: Database, subscriber_id: int) -> subscriptions.PersonExport:
    """Everything stored about the subscriber, as `campaign export` prints it."""
    return subscriptions.export_person(db, _address(db, subscriber_id))


def forget(db: Database, subscriber_id: int, now: datetime) -> None:
    """Erase the subscriber as `campaign forget` does: a hash of the address stays, so it is
    never mailed by mistake (an audit entry should name the id, never the address)."""
    subscriptions.forget_person(db, _address(db, subscriber_id), now)
