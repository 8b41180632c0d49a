"""Every query, as a function taking a Session first. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, true, tuple_, update
from sqlalchemy.orm import Session

from campaign.models import (
    Click,
    Consent,
    Delivery,
    Enrollment,
    Heartbeat,
    Subscriber,
    Suppression,
)

#: A delivery in one of these states is done: its step never goes to that enrollment again.
SETTLED = ("sent", "failed", "bounced", "skipped")


@dataclass(frozen=True)
class SubscriberRecord:
    id: int
    email: str
    first_name: str
    timezone: str
    status: str


@dataclass(frozen=True)
class Claim:
    """One step of one enrollment, claimed by a pass for sending (plain values, no ORM)."""

    delivery_id: int
    message_id: str
    attempts: int
    enrollment_id: int
    step_key: str
    step_day: int
    due_at: datetime
    started_at: datetime
    last_sent_at: datetime | None
    subscriber_id: int
    email: str
    first_name: str
    timezone: str


def _record(row: Subscriber) -> SubscriberRecord:
    return SubscriberRecord(row.id, row.email, row.first_name, row.timezone, row.status)


# -- subscribers ----------------------------------------------------------------------------


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
    status: str,
    source: str,
    now: datetime,
) -> int:
    subscriber = Subscriber(
        email=email,
        first_name=first_name,
        timezone=timezone,
        status=status,
        source=source,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == "active" else None,
    )
    session.add(subscriber)
    session.flush()
    return subscriber.id


def set_subscriber_status(session: Session, subscriber_id: int, status: str, now: datetime) -> None:
    values: dict[str, object] = {"status": status, "updated_at": now}
    if status == "unsubscribed":
        values["unsubscribed_at"] = now
    if status == "active":
        values["confirmed_at"] = now
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(**values))


def cancel_enrollments(session: Session, subscriber_id: int, now: datetime) -> None:
    session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id, Enrollment.status == "active")
        .values(status="cancelled", next_due_at=None, updated_at=now)
    )


def subscriber_is_active(session: Session, subscriber_id: int) -> bool:
    status = session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))
    return status == "active"


# -- enrollments ----------------------------------------------------------------------------


def enrol(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> bool:
    """Start `plan_id` for a subscriber, first step due now; False if already enrolled."""
    exists = session.scalar(
        select(Enrollment.id).where(
            Enrollment.subscriber_id == subscriber_id, Enrollment.plan_id == plan_id
        )
    )
    if exists is not None:
        return False
    session.add(
        Enrollment(
            subscriber_id=subscriber_id,
            plan_id=plan_id,
            status="active",
            started_at=now,
            last_day=-1,
            next_due_at=now,
            updated_at=now,
        )
    )
    session.flush()
    return True


def claim_due(
    session: Session,
    *,
    plan_id: str,
    steps: Sequence[tuple[str, int]],
    now: datetime,
    owner: str,
    lease_until: datetime,
    limit: int,
    new_message_id: Callable[[], str],
    only_enrollment: int | None = None,
) -> list[Claim]:
    """Claim up to `limit` due steps: lease them to `owner` until `lease_until`.

    `steps` are the plan's (key, day) pairs in order; an enrollment's next step is the first
    one after the day it has reached. On PostgreSQL rows locked by another claimer are
    skipped (FOR UPDATE SKIP LOCKED); on SQLite the transaction already holds the single
    write lock. A claimed enrollment's `next_due_at` becomes the lease expiry, so it is due
    again only if the claimer dies.
    """
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.last_day,
            Enrollment.next_due_at,
            Enrollment.started_at,
            Enrollment.last_sent_at,
            Subscriber.id,
            Subscriber.email,
            Subscriber.first_name,
            Subscriber.timezone,
        )
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            Enrollment.plan_id == plan_id,
            Enrollment.status == "active",
            Enrollment.next_due_at <= now,
            Subscriber.status == "active",
            Enrollment.id == only_enrollment if only_enrollment is not None else true(),
        )
        .order_by(Enrollment.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Enrollment)
    ).all()
    if not rows:
        return []
    upcoming = {r[0]: next(((k, d) for k, d in steps if d > r[1]), None) for r in rows}
    finished = [enrollment for enrollment, step in upcoming.items() if step is None]
    if finished:
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(finished))
            .values(status="completed", next_due_at=None, updated_at=now)
        )
    wanted = [(enrollment, step[0]) for enrollment, step in upcoming.items() if step]
    existing = (
        {
            (d.enrollment_id, d.step_key): d
            for d in session.execute(
                select(Delivery.enrollment_id, Delivery.step_key, Delivery.id, Delivery.status)
                .add_columns(Delivery.message_id, Delivery.attempts)
                .where(tuple_(Delivery.enrollment_id, Delivery.step_key).in_(wanted))
            )
        }
        if wanted
        else {}
    )
    claims: list[Claim] = []
    for row in rows:
        enrollment_id, _, due_at, started_at, last_sent_at, sub_id, email, name, tz = row
        step = upcoming[enrollment_id]
        if step is None:
            continue
        key, day = step
        found = existing.get((enrollment_id, key))
        if found is not None and found.status in SETTLED:
            # Settled under an earlier plan (a step moved to a later day): never again. Move
            # past it; the enrollment stays due and the next claim looks further on.
            session.execute(
                update(Enrollment)
                .where(Enrollment.id == enrollment_id, Enrollment.last_day < day)
                .values(last_day=day, updated_at=now)
            )
            continue
        if found is None:
            message_id = new_message_id()
            delivery_id = session.scalars(
                insert(Delivery).returning(Delivery.id),
                [
                    {
                        "enrollment_id": enrollment_id,
                        "step_key": key,
                        "status": "queued",
                        "attempts": 0,
                        "message_id": message_id,
                        "lease_owner": owner,
                        "lease_expires_at": lease_until,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            ).one()
            attempts = 0
        else:
            delivery_id, message_id, attempts = found.id, found.message_id, found.attempts
        claims.append(
            Claim(
                delivery_id, message_id, attempts, enrollment_id, key, day,
                due_at or now, started_at, last_sent_at, sub_id, email, name, tz,
            )
        )  # fmt: skip
    reused = [c.delivery_id for c in claims if (c.enrollment_id, c.step_key) in existing]
    if reused:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(reused))
            .values(
                status="queued", lease_owner=owner, lease_expires_at=lease_until, updated_at=now
            )
        )
    if claims:
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_([c.enrollment_id for c in claims]))
            .values(next_due_at=lease_until, updated_at=now)
        )
    return claims


def _settle_delivery(
    session: Session, claim: Claim, status: str, now: datetime, error: str | None
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id == claim.delivery_id)
        .values(
            status=status,
            attempts=Delivery.attempts + 1,
            last_error=error,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            sent_at=now if status == "sent" else None,
        )
    )


def _advance(
    session: Session,
    claim: Claim,
    now: datetime,
    next_due_at: datetime | None,
    *,
    sent: bool,
) -> None:
    values: dict[str, object] = {
        "last_day": claim.step_day,
        "next_due_at": next_due_at,
        "updated_at": now,
    }
    if sent:
        values["last_sent_at"] = now
    if next_due_at is None:
        values["status"] = "completed"
    # Guarded by the step index, so recording the same outcome twice moves the pointer once.
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == claim.enrollment_id,
            Enrollment.last_day < claim.step_day,
            Enrollment.status == "active",
        )
        .values(**values)
    )


def record_sent(
    session: Session, claim: Claim, sent_at: datetime, next_due_at: datetime | None
) -> None:
    """The server said 250: the step is done and the enrollment moves on."""
    _settle_delivery(session, claim, "sent", sent_at, None)
    _advance(session, claim, sent_at, next_due_at, sent=True)


def record_retry(
    session: Session, claim: Claim, now: datetime, error: str, retry_at: datetime
) -> None:
    """A temporary failure: try the same step (same Message-ID) again at `retry_at`."""
    _settle_delivery(session, claim, "retry", now, error)
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == claim.enrollment_id, Enrollment.status == "active")
        .values(next_due_at=retry_at, updated_at=now)
    )


def record_failed(
    session: Session, claim: Claim, now: datetime, error: str, next_due_at: datetime | None
) -> None:
    """The step failed for good; the subscriber's plan goes on with the next step."""
    _settle_delivery(session, claim, "failed", now, error)
    _advance(session, claim, now, next_due_at, sent=False)


def record_bounce(
    session: Session, claim: Claim, now: datetime, error: str, email_hash: str
) -> None:
    """The address does not exist: fail the step, mark the subscriber bounced, stop the plan,
    and suppress the address so no later signup or import mails it again."""
    _settle_delivery(session, claim, "bounced", now, error)
    stop_mailing(session, claim.subscriber_id, "bounced", email_hash, now)


def stop_mailing(
    session: Session, subscriber_id: int | None, status: str, email_hash: str, now: datetime
) -> None:
    """Bounced or complained: status set, plan cancelled, address suppressed (by hash)."""
    if subscriber_id is not None:
        set_subscriber_status(session, subscriber_id, status, now)
        cancel_enrollments(session, subscriber_id, now)
    suppress(session, email_hash, status, now)


def consecutive_failures(session: Session, subscriber_id: int) -> int:
    """How many of the subscriber's latest settled deliveries in a row failed."""
    statuses = session.scalars(
        select(Delivery.status)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Delivery.status.in_(("sent", "failed")),
        )
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(50)
    )
    count = 0
    for status in statuses:
        if status != "failed":
            break
        count += 1
    return count


def suppression_reason(session: Session, email_hash: str) -> str | None:
    row = session.get(Suppression, email_hash)
    return row.reason if row else None


def record_late_skip(
    session: Session, claim: Claim, now: datetime, reason: str, next_due_at: datetime | None
) -> None:
    """The step is too late to be worth sending (catch_up: skip_after): skip it, move on."""
    _settle_delivery(session, claim, "skipped", now, reason)
    _advance(session, claim, now, next_due_at, sent=False)


def record_skipped(session: Session, claim: Claim, now: datetime, reason: str) -> None:
    """Not sent because the subscriber left between claim and send."""
    _settle_delivery(session, claim, "skipped", now, reason)


def release(session: Session, claims: Iterable[Claim], now: datetime) -> None:
    """Give claims back unsent (graceful stop): due again at their old time, attempts unchanged."""
    for claim in claims:
        session.execute(
            update(Delivery)
            .where(Delivery.id == claim.delivery_id, Delivery.status == "queued")
            .values(lease_owner=None, lease_expires_at=None, updated_at=now)
        )
        session.execute(
            update(Enrollment)
            .where(Enrollment.id == claim.enrollment_id, Enrollment.status == "active")
            .values(next_due_at=claim.due_at, updated_at=now)
        )


# -- reporting ------------------------------------------------------------------------------


def count_subscribers_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status))
    return {str(status): int(count) for status, count in rows}


def count_deliveries_by_step(session: Session, plan_id: str) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(Delivery.step_key, Delivery.status, func.count())
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(Enrollment.plan_id == plan_id)
        .group_by(Delivery.step_key, Delivery.status)
    )
    return {(key, status): count for key, status, count in rows}


def count_active_by_last_day(session: Session, plan_id: str) -> dict[int, int]:
    """Active enrollments by the plan day they have reached."""
    rows = session.execute(
        select(Enrollment.last_day, func.count())
        .where(Enrollment.plan_id == plan_id, Enrollment.status == "active")
        .group_by(Enrollment.last_day)
    )
    return {int(step): int(count) for step, count in rows}


def delete_subscriber(session: Session, subscriber_id: int) -> None:
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def due_count(session: Session, plan_id: str, now: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .where(
                and_(
                    Enrollment.plan_id == plan_id,
                    Enrollment.status == "active",
                    Enrollment.next_due_at <= now,
                    Subscriber.status == "active",
                )
            )
        )
        or 0
    )


# -- consent, suppression, forgetting ------------------------------------------------------


def record_consent(
    session: Session,
    subscriber_id: int,
    *,
    kind: str,
    at: datetime,
    ip: str,
    user_agent: str,
    source_page: str,
) -> None:
    session.add(
        Consent(
            subscriber_id=subscriber_id, kind=kind, at=at, ip=ip[:64],
            user_agent=user_agent[:400], source_page=source_page[:400],
        )
    )  # fmt: skip


def is_suppressed(session: Session, email_hash: str) -> bool:
    return session.get(Suppression, email_hash) is not None


def reopen_suppressed(session: Session, subscriber_id: int, now: datetime) -> None:
    """An operator cleared the suppression: a bounced or complained row may sign up again."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.status.in_(("bounced", "complained")))
        .values(status="unsubscribed", updated_at=now)
    )


def suppress(session: Session, email_hash: str, reason: str, now: datetime) -> None:
    if session.get(Suppression, email_hash) is None:
        session.add(Suppression(email_hash=email_hash, reason=reason, created_at=now))


def unsuppress(session: Session, email_hash: str) -> None:
    session.execute(delete(Suppression).where(Suppression.email_hash == email_hash))


def subscriber_by_id(session: Session, subscriber_id: int) -> SubscriberRecord | None:
    row = session.get(Subscriber, subscriber_id)
    return _record(row) if row else None


def resume_enrollment(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> bool:
    """Restart a cancelled enrollment where it stopped (not from the start); False if none."""
    result = session.execute(
        update(Enrollment)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.plan_id == plan_id,
            Enrollment.status == "cancelled",
        )
        .values(status="active", next_due_at=now, updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


def enrollment_id(session: Session, subscriber_id: int, plan_id: str) -> int | None:
    return session.scalar(
        select(Enrollment.id).where(
            Enrollment.subscriber_id == subscriber_id, Enrollment.plan_id == plan_id
        )
    )


def everything_about(session: Session, subscriber_id: int) -> dict[str, Any]:
    """All rows that concern one subscriber, as plain values (for `campaign export`)."""

    def rows(model: Any, where: Any) -> list[dict[str, Any]]:
        return [
            {c.key: getattr(row, c.key) for c in model.__table__.columns}
            for row in session.scalars(select(model).where(where))
        ]

    enrollments = rows(Enrollment, Enrollment.subscriber_id == subscriber_id)
    ids = [e["id"] for e in enrollments]
    return {
        "subscriber": rows(Subscriber, Subscriber.id == subscriber_id)[0],
        "consents": rows(Consent, Consent.subscriber_id == subscriber_id),
        "enrollments": enrollments,
        "deliveries": rows(Delivery, Delivery.enrollment_id.in_(ids)) if ids else [],
    }


def purge_pending(session: Session, created_before: datetime) -> int:
    """Delete signups never confirmed since `created_before`; returns how many."""
    result = session.execute(
        delete(Subscriber).where(
            Subscriber.status == "pending", Subscriber.created_at < created_before
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# -- heartbeats ----------------------------------------------------------------------------


def beat(
    session: Session,
    owner: str,
    started_at: datetime,
    now: datetime,
    seconds: float,
    paused_reason: str | None = None,
) -> None:
    row = session.get(Heartbeat, owner)
    if row is None:
        session.add(
            Heartbeat(
                owner=owner, started_at=started_at, last_pass_at=now,
                last_pass_seconds=seconds, paused_reason=paused_reason,
            )
        )  # fmt: skip
    else:
        row.last_pass_at = now
        row.last_pass_seconds = seconds
        row.paused_reason = paused_reason


def latest_heartbeat(session: Session) -> tuple[datetime, str | None] | None:
    """When the most recent pass of any scheduler ended, and why it was paused (if it was)."""
    row = session.execute(
        select(Heartbeat.last_pass_at, Heartbeat.paused_reason)
        .order_by(Heartbeat.last_pass_at.desc())
        .limit(1)
    ).one_or_none()
    return (row[0], row[1]) if row else None


# -- numbers per step ------------------------------------------------------------------------


def unsubscribes_after_step(session: Session, plan_id: str, window: timedelta) -> dict[str, int]:
    """Per step key: unsubscribes that came within `window` after that step's email."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.unsubscribed_at, Delivery.step_key, Delivery.sent_at)
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Delivery, Delivery.enrollment_id == Enrollment.id)
        .where(
            Enrollment.plan_id == plan_id,
            Subscriber.status == "unsubscribed",
            Delivery.status == "sent",
            Delivery.sent_at <= Subscriber.unsubscribed_at,
        )
    )
    latest: dict[int, tuple[datetime, str, datetime]] = {}
    for subscriber_id, left_at, step_key, sent_at in rows:
        if sent_at is None or left_at is None:
            continue
        if subscriber_id not in latest or sent_at > latest[subscriber_id][0]:
            latest[subscriber_id] = (sent_at, step_key, left_at)
    counts: dict[str, int] = {}
    for sent_at, step_key, left_at in latest.values():
        if left_at - sent_at <= window:
            counts[step_key] = counts.get(step_key, 0) + 1
    return counts


def record_click(session: Session, delivery_id: int, url: str, at: datetime) -> bool:
    """Count a click; False when the delivery no longer exists (the person was forgotten)."""
    if session.get(Delivery, delivery_id) is None:
        return False
    session.add(Click(delivery_id=delivery_id, url=url, at=at))
    return True


def clicks_by_step(session: Session, plan_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.step_key, func.count(Click.id))
        .join(Delivery, Delivery.id == Click.delivery_id)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(Enrollment.plan_id == plan_id)
        .group_by(Delivery.step_key)
    )
    return {str(key): int(count) for key, count in rows}
