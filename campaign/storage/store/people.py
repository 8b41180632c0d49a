"""Subscribers and what is kept about them: enrollments, consent, suppression, erasure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaign.domain import webhooks as spec
from campaign.domain.statuses import (
    STOPPED,
    ConsentKind,
    EnrollmentStatus,
    SubscriberStatus,
    SuppressionReason,
)
from campaign.storage.models import (
    Confirmation,
    Consent,
    Delivery,
    Enrollment,
    Subscriber,
    Suppression,
)
from campaign.storage.store import memberships, webhooks
from campaign.storage.store.confirmations import void_confirmations

#: the outgoing webhook event a change of a subscriber's status to each status is.
_STATUS_EVENTS = {
    SubscriberStatus.ACTIVE: spec.SUBSCRIBER_CONFIRMED,
    SubscriberStatus.UNSUBSCRIBED: spec.SUBSCRIBER_UNSUBSCRIBED,
    SubscriberStatus.BOUNCED: spec.SUBSCRIBER_BOUNCED,
    SubscriberStatus.COMPLAINED: spec.SUBSCRIBER_COMPLAINED,
}


@dataclass(frozen=True)
class SubscriberRecord:
    id: int
    email: str
    first_name: str
    timezone: str
    status: SubscriberStatus
    #: custom field values as stored: a JSON object in text.
    fields: str = "{}"


def _record(row: Subscriber) -> SubscriberRecord:
    status = SubscriberStatus(row.status)
    return SubscriberRecord(row.id, row.email, row.first_name, row.timezone, status, row.fields)


def find_subscriber(session: Session, email: str) -> SubscriberRecord | None:
    row = session.scalars(
        select(Subscriber).where(func.lower(Subscriber.email) == email.lower())
    ).one_or_none()
    return _record(row) if row else None


def existing_emails(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of `emails` (lowercased) are already subscribers."""
    lowered = list({e.lower() for e in emails})
    found: set[str] = set()
    for start in range(0, len(lowered), 500):
        chunk = lowered[start : start + 500]
        found.update(
            session.scalars(
                select(func.lower(Subscriber.email)).where(func.lower(Subscriber.email).in_(chunk))
            )
        )
    return found


def add_subscriber(
    session: Session,
    *,
    email: str,
    first_name: str,
    timezone: str,
    status: SubscriberStatus,
    source: str,
    now: datetime,
    fields: str = "{}",
) -> int:
    subscriber = Subscriber(
        email=email,
        first_name=first_name,
        timezone=timezone,
        status=status,
        source=source,
        fields=fields,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
    )
    session.add(subscriber)
    session.flush()
    return subscriber.id


def subscriber_fields_for_update(session: Session, subscriber_id: int) -> str:
    """The subscriber's custom field values (JSON text), the row locked until the transaction
    ends (PostgreSQL; SQLite has one writer): two updates at once never lose one's values."""
    return (
        session.scalar(
            select(Subscriber.fields).where(Subscriber.id == subscriber_id).with_for_update()
        )
        or "{}"
    )


def set_subscriber_fields(session: Session, subscriber_id: int, fields: str, now: datetime) -> None:
    """Replace the subscriber's custom field values (a JSON object in text)."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(fields=fields, updated_at=now)
    )


def set_subscriber_status(
    session: Session, subscriber_id: int, status: SubscriberStatus, now: datetime
) -> None:
    event = _STATUS_EVENTS.get(status)
    before = None
    if event is not None and webhooks.wanted(session, event):
        before = session.execute(
            select(
                Subscriber.email, Subscriber.first_name, Subscriber.status, Subscriber.fields
            ).where(Subscriber.id == subscriber_id)
        ).first()
    values: dict[str, object] = {"status": status, "updated_at": now}
    if status == SubscriberStatus.UNSUBSCRIBED:
        values["unsubscribed_at"] = now
    if status == SubscriberStatus.ACTIVE:
        values["confirmed_at"] = now
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(**values))
    if status not in (SubscriberStatus.PENDING, SubscriberStatus.ACTIVE):
        # The person left: a confirmation link sent before now must not bring them back.
        void_confirmations(session, subscriber_id, now)
    if event is not None and before is not None and before.status != status:
        data = webhooks.subscriber_data(
            before.email, before.first_name, subscriber_id, status, before.fields
        )
        webhooks.add_event(session, event, now, data, subscriber_id=subscriber_id)


def leave(session: Session, subscriber_id: int, status: SubscriberStatus, now: datetime) -> None:
    """The subscriber leaves (unsubscribed, bounced, complained): `status` set, plans stopped."""
    set_subscriber_status(session, subscriber_id, status, now)
    cancel_enrollments(session, subscriber_id, now)


def stop_mailing(
    session: Session,
    subscriber_id: int | None,
    status: SubscriberStatus,
    email_hash: str,
    now: datetime,
) -> None:
    """Bounced or complained (`status`, one of `STOPPED`): the subscriber (if still stored)
    leaves with that status, and the address is suppressed (by hash) for the same reason."""
    if subscriber_id is not None:
        leave(session, subscriber_id, SubscriberStatus(status), now)
    suppress(session, email_hash, SuppressionReason(status), now)


def cancel_enrollments(session: Session, subscriber_id: int, now: datetime) -> None:
    """Stop the subscriber's plans, settling any step still queued or awaiting a retry."""
    running = and_(
        Enrollment.subscriber_id == subscriber_id, Enrollment.status == EnrollmentStatus.ACTIVE
    )
    memberships.cancel(session, running, "subscriber left", now)


def enrol(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> int | None:
    """Start `plan_id` afresh for a subscriber, first step (the welcome) due now: a new
    enrollment, whatever earlier ones they left behind (those stay, with their deliveries).
    Returns its id; None if the subscriber already has an active enrollment in the plan."""
    # One statement: the partial unique index decides, so two confirm clicks at once (or a
    # click racing a signup) start one enrollment, with no savepoint and no read first.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Enrollment)
        .values(
            subscriber_id=subscriber_id,
            plan_id=plan_id,
            status=EnrollmentStatus.ACTIVE,
            started_at=now,
            last_day=-1,
            next_due_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["subscriber_id", "plan_id"], index_where=text("status = 'active'")
        )
        .returning(Enrollment.id)
    )
    return session.scalar(statement)


def record_consent(
    session: Session,
    subscriber_id: int,
    *,
    kind: ConsentKind,
    at: datetime,
    ip: str,
    user_agent: str,
    source_page: str,
) -> None:
    session.add(
        Consent(
            subscriber_id=subscriber_id,
            kind=kind,
            at=at,
            ip=ip[:64],
            user_agent=user_agent[:400],
            source_page=source_page[:400],
        )
    )


def is_suppressed(session: Session, email_hash: str) -> bool:
    return session.get(Suppression, email_hash) is not None


def reopen_suppressed(session: Session, subscriber_id: int, now: datetime) -> None:
    """An operator cleared the suppression: a bounced or complained row may sign up again."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.status.in_(STOPPED))
        .values(status=SubscriberStatus.UNSUBSCRIBED, updated_at=now)
    )


def suppress(session: Session, email_hash: str, reason: SuppressionReason, now: datetime) -> None:
    if session.get(Suppression, email_hash) is None:
        session.add(Suppression(email_hash=email_hash, reason=reason, created_at=now))


def unsuppress(session: Session, email_hash: str) -> None:
    session.execute(delete(Suppression).where(Suppression.email_hash == email_hash))


def subscriber_by_id(session: Session, subscriber_id: int) -> SubscriberRecord | None:
    row = session.get(Subscriber, subscriber_id)
    return _record(row) if row else None


def active_enrollment_id(session: Session, subscriber_id: int, plan_id: str) -> int | None:
    """The subscriber's running enrollment in `plan_id`, if any (at most one by the schema)."""
    return session.scalar(
        select(Enrollment.id).where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.plan_id == plan_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
    )


def furthest_day(session: Session, subscriber_id: int, plan_id: str) -> int | None:
    """The last plan day the subscriber's runs of `plan_id` reached (sent, skipped or failed):
    -1 before the welcome, None if they never started it."""
    return session.scalar(
        select(func.max(Enrollment.last_day)).where(
            Enrollment.subscriber_id == subscriber_id, Enrollment.plan_id == plan_id
        )
    )


#: One stored row as its columns' values, by column name.
RowValues = dict[str, Any]


class PersonRows(TypedDict):
    """Every row that concerns one subscriber, by table (the shape `campaign export` prints)."""

    subscriber: RowValues
    consents: list[RowValues]
    confirmations: list[RowValues]
    enrollments: list[RowValues]
    deliveries: list[RowValues]


def everything_about(session: Session, subscriber_id: int) -> PersonRows:
    """All rows that concern one subscriber, as plain values (for `campaign export`)."""

    def rows(model: Any, where: Any) -> list[RowValues]:
        return [
            {c.key: getattr(row, c.key) for c in model.__table__.columns}
            for row in session.scalars(select(model).where(where))
        ]

    enrollments = rows(Enrollment, Enrollment.subscriber_id == subscriber_id)
    ids = [e["id"] for e in enrollments]
    return {
        "subscriber": rows(Subscriber, Subscriber.id == subscriber_id)[0],
        "consents": rows(Consent, Consent.subscriber_id == subscriber_id),
        "confirmations": rows(Confirmation, Confirmation.subscriber_id == subscriber_id),
        "enrollments": enrollments,
        "deliveries": rows(Delivery, Delivery.enrollment_id.in_(ids)) if ids else [],
    }


def purge_pending(session: Session, created_before: datetime) -> int:
    """Delete signups never confirmed since `created_before`; returns how many."""
    result = session.execute(
        delete(Subscriber).where(
            Subscriber.status == SubscriberStatus.PENDING, Subscriber.created_at < created_before
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def delete_subscriber(session: Session, subscriber_id: int) -> None:
    """Erase the subscriber, with the outgoing webhook events about them (even undelivered
    ones: they carry the address)."""
    webhooks.forget_subscriber(session, subscriber_id)
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def suppression_reason(session: Session, email_hash: str) -> SuppressionReason | None:
    row = session.get(Suppression, email_hash)
    return SuppressionReason(row.reason) if row else None


def refresh_statistics(session: Session) -> None:
    """Have PostgreSQL's planner look at the people tables again (after a bulk import)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE subscribers, enrollments"))
