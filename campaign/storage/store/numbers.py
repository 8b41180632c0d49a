"""Counts for stats, reports and metrics; scheduler heartbeats; clicks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaign.domain import webhooks as spec
from campaign.domain.statuses import DeliveryStatus, EnrollmentStatus, SubscriberStatus
from campaign.storage.models import (
    Click,
    Delivery,
    Enrollment,
    Heartbeat,
    Subscriber,
    Suppression,
)
from campaign.storage.store import webhooks


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


@dataclass(frozen=True)
class FailureReason:
    """Why some deliveries failed or wait for a retry: their status, last error and number."""

    status: DeliveryStatus
    reason: str
    count: int


def failure_reasons(session: Session, plan_id: str, limit: int = 10) -> list[FailureReason]:
    """The commonest reasons deliveries failed or wait for a retry, commonest first."""
    count = func.count().label("count")
    rows = session.execute(
        select(Delivery.status, Delivery.last_error, count)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Enrollment.plan_id == plan_id,
            Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.RETRY)),
            Delivery.last_error.is_not(None),
        )
        .group_by(Delivery.status, Delivery.last_error)
        .order_by(count.desc(), Delivery.status, Delivery.last_error)
        .limit(limit)
    )
    return [
        FailureReason(DeliveryStatus(status), str(reason), int(n)) for status, reason, n in rows
    ]


def unknown_outcomes_by_step(session: Session, plan_id: str) -> dict[str, int]:
    """Per step, deliveries whose server never answered the end of the message at least once
    (each may have arrived twice, or, if still unknown, not at all)."""
    rows = session.execute(
        select(Delivery.step_key, func.count())
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(Enrollment.plan_id == plan_id, Delivery.unknown_outcomes > 0)
        .group_by(Delivery.step_key)
    )
    return {key: int(count) for key, count in rows}


def count_active_by_last_day(session: Session, plan_id: str) -> dict[int, int]:
    """Active enrollments by the plan day they have reached."""
    rows = session.execute(
        select(Enrollment.last_day, func.count())
        .where(Enrollment.plan_id == plan_id, Enrollment.status == EnrollmentStatus.ACTIVE)
        .group_by(Enrollment.last_day)
    )
    return {int(step): int(count) for step, count in rows}


def count_suppressions_by_reason(session: Session) -> dict[str, int]:
    rows = session.execute(select(Suppression.reason, func.count()).group_by(Suppression.reason))
    return {str(reason): int(count) for reason, count in rows}


def oldest_due_at(session: Session, plan_id: str, now: datetime) -> datetime | None:
    """When the longest-waiting step due at `now` fell due (None: nothing is due)."""
    return session.scalar(
        select(func.min(Enrollment.next_due_at))
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            Enrollment.plan_id == plan_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_due_at <= now,
            Subscriber.status == SubscriberStatus.ACTIVE,
        )
    )


def due_count(session: Session, plan_id: str, now: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .where(
                and_(
                    Enrollment.plan_id == plan_id,
                    Enrollment.status == EnrollmentStatus.ACTIVE,
                    Enrollment.next_due_at <= now,
                    Subscriber.status == SubscriberStatus.ACTIVE,
                )
            )
        )
        or 0
    )


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
                owner=owner,
                started_at=started_at,
                last_pass_at=now,
                last_pass_seconds=seconds,
                paused_reason=paused_reason,
            )
        )
    else:
        row.last_pass_at = now
        row.last_pass_seconds = seconds
        row.paused_reason = paused_reason


class LastPass(NamedTuple):
    """The most recent pass of any scheduler: when it ended, and why sending was paused."""

    at: datetime
    paused_reason: str | None


def latest_heartbeat(session: Session) -> LastPass | None:
    """When the most recent pass of any scheduler ended, and why it was paused (if it was)."""
    row = session.execute(
        select(Heartbeat.last_pass_at, Heartbeat.paused_reason)
        .order_by(Heartbeat.last_pass_at.desc())
        .limit(1)
    ).one_or_none()
    return LastPass(row[0], row[1]) if row else None


def unsubscribes_after_step(session: Session, plan_id: str, window: timedelta) -> dict[str, int]:
    """Per step key: unsubscribes that came within `window` after that step's email."""
    counts: dict[str, int] = {}
    for (step_key, _), count in unsubscribes_after_variant(session, plan_id, window).items():
        counts[step_key] = counts.get(step_key, 0) + count
    return counts


def unsubscribes_after_variant(
    session: Session, plan_id: str, window: timedelta
) -> dict[tuple[str, str | None], int]:
    """Per step key and subject variant (None: no test): unsubscribes that came within
    `window` after the last email sent to that subscriber before they left."""
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.unsubscribed_at,
            Delivery.step_key,
            Delivery.variant,
            Delivery.sent_at,
        )
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Delivery, Delivery.enrollment_id == Enrollment.id)
        .where(
            Enrollment.plan_id == plan_id,
            Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at <= Subscriber.unsubscribed_at,
        )
    )
    latest: dict[int, tuple[datetime, tuple[str, str | None], datetime]] = {}
    for subscriber_id, left_at, step_key, variant, sent_at in rows:
        if sent_at is None or left_at is None:
            continue
        if subscriber_id not in latest or sent_at > latest[subscriber_id][0]:
            latest[subscriber_id] = (sent_at, (step_key, variant), left_at)
    counts: dict[tuple[str, str | None], int] = {}
    for sent_at, where, left_at in latest.values():
        if left_at - sent_at <= window:
            counts[where] = counts.get(where, 0) + 1
    return counts


def record_click(session: Session, delivery_id: int, url: str, at: datetime) -> bool:
    """Count a click; False when the delivery no longer exists (the person was forgotten)."""
    if session.get(Delivery, delivery_id) is None:
        return False
    # Insert-if-absent: a replay (a link scanner, a reload) counts once per delivery and link.
    values = {"delivery_id": delivery_id, "url": url, "url_hash": url_hash(url), "at": at}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = session.execute(
        insert(Click).values(**values).on_conflict_do_nothing().returning(Click.id)
    ).first()
    if added is not None:
        webhooks.add_delivery_event(session, spec.CLICK, delivery_id, at, {"url": url})
    return True


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def clicks_by_step(session: Session, plan_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.step_key, func.count(Click.id))
        .join(Delivery, Delivery.id == Click.delivery_id)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(Enrollment.plan_id == plan_id)
        .group_by(Delivery.step_key)
    )
    return {str(key): int(count) for key, count in rows}


class VariantCounts(NamedTuple):
    """One variant of a step's subject test: emails sent, and those sent with a click."""

    sent: int
    clicked: int
    clicks: int


def counts_by_variant(session: Session, plan_id: str) -> dict[tuple[str, str], VariantCounts]:
    """Per step key and subject variant, of the deliveries that recorded one: how many were
    sent, how many of those were clicked (at least once), and their clicks."""
    sent = session.execute(
        select(Delivery.step_key, Delivery.variant, func.count())
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Enrollment.plan_id == plan_id,
            Delivery.variant.is_not(None),
            Delivery.status == DeliveryStatus.SENT,
        )
        .group_by(Delivery.step_key, Delivery.variant)
    )
    clicked = session.execute(
        select(
            Delivery.step_key,
            Delivery.variant,
            func.count(func.distinct(Click.delivery_id)),
            func.count(Click.id),
        )
        .join(Delivery, Delivery.id == Click.delivery_id)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Enrollment.plan_id == plan_id,
            Delivery.variant.is_not(None),
            Delivery.status == DeliveryStatus.SENT,
        )
        .group_by(Delivery.step_key, Delivery.variant)
    )
    counts = {(str(key), str(variant)): VariantCounts(int(n), 0, 0) for key, variant, n in sent}
    for key, variant, deliveries, clicks in clicked:
        found = counts.get((str(key), str(variant)), VariantCounts(0, 0, 0))
        counts[(str(key), str(variant))] = found._replace(
            clicked=int(deliveries), clicks=int(clicks)
        )
    return counts
