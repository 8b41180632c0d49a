"""The operators' console queries: subscriber search (a prefix of the address or the name, a
page at a time by keyset), one subscriber's whole record, and the rows of a welcome resend.

Search is a prefix match on `lower(email)` / `lower(first_name)` under the "C" collation on
PostgreSQL: the expression indexes of migration 0013 serve both the LIKE prefix and the
ordering, whatever the database's own collation. SQLite's BINARY collation orders the same way
(and it scans: a console on SQLite is a small list's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from campaign.domain.statuses import DeliveryStatus
from campaign.storage.models import Click, Consent, Delivery, Enrollment, Subscriber, Suppression

#: A resend's step key: "+" never starts a plan's key, so it never names a step of the plan.
RESEND_PREFIX = "+resend"


@dataclass(frozen=True)
class SubscriberRow:
    """One search result."""

    id: int
    email: str
    first_name: str
    status: str
    created_at: datetime


class SearchCursor(NamedTuple):
    """Where a page of results ended: in the address matches (`key`, the last address), or in
    the name matches (`key`, `id`: the last name and id; key None: before the first)."""

    phase: Literal["address", "name"]
    key: str | None
    id: int = 0


@dataclass(frozen=True)
class SearchPage:
    """A page of results, and where the next page starts (None: this is the last)."""

    rows: list[SubscriberRow]
    next_cursor: SearchCursor | None


def _search_key(session: Session, column: Any) -> ColumnElement[str]:
    lowered: ColumnElement[str] = func.lower(column)
    if session.get_bind().dialect.name == "postgresql":
        return lowered.collate("C")
    return lowered


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.first_name,
    Subscriber.status,
    Subscriber.created_at,
)


def search_subscribers(
    session: Session, query: str, *, after: SearchCursor | None, limit: int
) -> SearchPage:
    """Subscribers whose address starts with `query` (lowercased by the caller), by address,
    then those whose first name does (and address does not), by name; `limit` at a time,
    after `after`. An empty query lists everyone by address.

    Two index range scans, never one scan filtered by an OR: a planner that guesses wrong about
    an OR walks the whole address index for a rare name (seconds at a million rows)."""
    email_key = _search_key(session, Subscriber.email)
    pattern = _like_prefix(query)
    rows: list[SubscriberRow] = []
    if after is None or after.phase == "address":
        statement = select(*_COLUMNS, email_key)
        if query:
            statement = statement.where(email_key.like(pattern, escape="\\"))
        if after is not None and after.key is not None:
            statement = statement.where(email_key > after.key)
        found = session.execute(statement.order_by(email_key).limit(limit + 1)).all()
        rows = [SubscriberRow(r[0], r[1], r[2], r[3], r[4]) for r in found[:limit]]
        if len(found) > limit:
            return SearchPage(rows, SearchCursor("address", str(found[limit - 1][5])))
        if not query:
            return SearchPage(rows, None)
        after = SearchCursor("name", None)
    name_key = _search_key(session, Subscriber.first_name)
    wanted = limit - len(rows)
    statement = select(*_COLUMNS, name_key).where(
        name_key.like(pattern, escape="\\"), ~email_key.like(pattern, escape="\\")
    )
    if after.key is not None:
        statement = statement.where(tuple_(name_key, Subscriber.id) > tuple_(after.key, after.id))
    found = session.execute(
        statement.order_by(name_key, Subscriber.id).limit(max(wanted, 1) + 1)
    ).all()
    if wanted == 0:
        return SearchPage(rows, after if found else None)
    rows += [SubscriberRow(r[0], r[1], r[2], r[3], r[4]) for r in found[:wanted]]
    if len(found) > wanted:
        last = found[wanted - 1]
        return SearchPage(rows, SearchCursor("name", str(last[5]), int(last[0])))
    return SearchPage(rows, None)


#: One stored row as its columns' values, by column name.
Values = dict[str, Any]


def _values(row: Any) -> Values:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


@dataclass(frozen=True)
class SubscriberFile:
    """Everything the subscriber page shows: the person, their consent records, enrollments
    (newest first), and every delivery (newest first) with the links clicked in it."""

    subscriber: Values
    consents: list[Values]
    enrollments: list[Values]
    deliveries: list[Values]


def subscriber_file(session: Session, subscriber_id: int) -> SubscriberFile | None:
    """The subscriber's record, or None if nobody has that id (any more)."""
    person = session.get(Subscriber, subscriber_id)
    if person is None:
        return None
    consents = session.scalars(
        select(Consent).where(Consent.subscriber_id == subscriber_id).order_by(Consent.at)
    )
    enrollments = [
        _values(row)
        for row in session.scalars(
            select(Enrollment)
            .where(Enrollment.subscriber_id == subscriber_id)
            .order_by(Enrollment.started_at.desc(), Enrollment.id.desc())
        )
    ]
    ids = [enrollment["id"] for enrollment in enrollments]
    deliveries: list[Values] = []
    if ids:
        rows = session.scalars(
            select(Delivery)
            .where(Delivery.enrollment_id.in_(ids))
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        )
        deliveries = [{**_values(row), "clicks": []} for row in rows]
        by_id = {delivery["id"]: delivery for delivery in deliveries}
        clicks = session.execute(
            select(Click.delivery_id, Click.url, Click.at)
            .where(Click.delivery_id.in_(list(by_id)))
            .order_by(Click.at)
        )
        for delivery_id, url, at in clicks:
            by_id[delivery_id]["clicks"].append({"url": url, "at": at})
    return SubscriberFile(_values(person), [_values(c) for c in consents], enrollments, deliveries)


def suppressed_among(session: Session, email_hashes: list[str]) -> set[str]:
    """Which of these address hashes are suppressed (an import preview's rows, a chunk at a
    time)."""
    found: set[str] = set()
    for start in range(0, len(email_hashes), 500):
        chunk = email_hashes[start : start + 500]
        found.update(
            session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(chunk)))
        )
    return found


@dataclass(frozen=True)
class WelcomeState:
    """A subscriber's latest enrollment in a plan, its welcome's status, and resends so far."""

    enrollment_id: int
    welcome_status: str | None
    resends: int


def plans_joined(session: Session, subscriber_id: int) -> list[str]:
    """The plan ids of the subscriber's enrollments, the latest started first."""
    rows = session.execute(
        select(Enrollment.plan_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.started_at.desc(), Enrollment.id.desc())
    )
    return list(dict.fromkeys(plan_id for (plan_id,) in rows))


def welcome_state(
    session: Session, subscriber_id: int, plan_id: str, welcome_key: str
) -> WelcomeState | None:
    """The latest enrollment of the subscriber in `plan_id` and what became of its welcome."""
    enrollment_id = session.scalar(
        select(Enrollment.id)
        .where(Enrollment.subscriber_id == subscriber_id, Enrollment.plan_id == plan_id)
        .order_by(Enrollment.started_at.desc(), Enrollment.id.desc())
        .limit(1)
    )
    if enrollment_id is None:
        return None
    status = session.scalar(
        select(Delivery.status).where(
            Delivery.enrollment_id == enrollment_id, Delivery.step_key == welcome_key
        )
    )
    resends = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(
            Delivery.enrollment_id == enrollment_id,
            Delivery.step_key.like(f"{RESEND_PREFIX}%"),
        )
    )
    return WelcomeState(enrollment_id, status, int(resends or 0))


def resend_key(number: int, welcome_key: str) -> str:
    """The step key of the `number`th resend of the welcome: never a key of the plan."""
    return f"{RESEND_PREFIX}{number}:{welcome_key}"[:64]


def add_resend(
    session: Session, enrollment_id: int, key: str, message_id: str, now: datetime
) -> int:
    """A queued delivery for a resend (its unique (enrollment, key) refuses a second one)."""
    delivery_id = session.scalar(
        insert(Delivery)
        .values(
            enrollment_id=enrollment_id,
            step_key=key,
            status=DeliveryStatus.QUEUED,
            attempts=0,
            unknown_outcomes=0,
            message_id=message_id,
            created_at=now,
            updated_at=now,
        )
        .returning(Delivery.id)
    )
    assert delivery_id is not None  # noqa: S101 (an INSERT ... RETURNING returns its row)
    return int(delivery_id)


def settle_resend(
    session: Session, delivery_id: int, status: DeliveryStatus, error: str | None, now: datetime
) -> None:
    """Record what became of a resend (it is never tried again: at most one send)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(
            status=status,
            attempts=Delivery.attempts + 1,
            last_error=error,
            updated_at=now,
            sent_at=now if status == DeliveryStatus.SENT else None,
        )
    )
