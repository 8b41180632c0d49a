"""One person's plans: whether they are in (or went through) a plan, leaving one plan while
staying in the others, and chaining a graduate into the plan that comes next."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from campaign.domain.statuses import PENDING_DELIVERY, DeliveryStatus, EnrollmentStatus
from campaign.storage.fast_path import naive_utc
from campaign.storage.models import Delivery, Enrollment


def cancel(session: Session, which: ColumnElement[bool], reason: str, now: datetime) -> None:
    """Cancel the enrollments `which` selects, settling any step still queued or awaiting a
    retry as skipped for `reason`.

    A sender holding one of those steps re-reads the status before DATA and skips it too;
    if the server already accepted it, recording that (sent) overwrites the skip.
    """
    session.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id.in_(select(Enrollment.id).where(which)),
            Delivery.status.in_(PENDING_DELIVERY),
        )
        .values(status=DeliveryStatus.SKIPPED, last_error=reason, updated_at=now)
    )
    session.execute(
        update(Enrollment)
        .where(which)
        .values(
            status=EnrollmentStatus.CANCELLED,
            next_due_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class Chain:
    """Where a graduate goes next (`then:`): the plan, and when its first step after day 0
    is due. The chained plan's day-0 step is never sent to a graduate: the welcome goes once.
    """

    plan_id: str
    next_due_at: datetime

    def params(self) -> dict[str, Any]:
        return {"chain_plan": self.plan_id, "chain_due": naive_utc(self.next_due_at)}


# Run in the transaction that records the last step, just before the enrollment is completed
# (same guard as that advance): an active subscriber who never was in the next plan starts it,
# past its day 0. Someone who left it (its footer link) is never put back by a graduation:
# only a signup naming it again does that. Parameters: those of the advance (deliveries) and
# `Chain.params`.
CHAIN_SQL = (
    "INSERT INTO enrollments (subscriber_id, plan_id, status, started_at, last_day,"
    " next_due_at, last_sent_at, updated_at)"
    " SELECT enrollments.subscriber_id, CAST(:chain_plan AS VARCHAR(64)), 'active', :now, 0,"
    " :chain_due,"
    " COALESCE(:sent_at, enrollments.last_sent_at), :now FROM enrollments"
    " WHERE enrollments.id = :enrollment AND enrollments.last_day < :day"
    " AND enrollments.status = 'active'"
    " AND EXISTS (SELECT 1 FROM subscribers WHERE subscribers.id = enrollments.subscriber_id"
    " AND subscribers.status = 'active')"
    " AND NOT EXISTS (SELECT 1 FROM enrollments AS others"
    " WHERE others.subscriber_id = enrollments.subscriber_id"
    " AND others.plan_id = CAST(:chain_plan AS VARCHAR(64)))"
    " ON CONFLICT DO NOTHING"
)


def in_or_through_plan(session: Session, subscriber_id: int, plan_id: str) -> bool:
    """True when the subscriber runs `plan_id` now or finished it: a signup naming it again
    starts nothing (the welcome goes once). A plan they left may be started again."""
    found = session.scalar(
        select(Enrollment.id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.plan_id == plan_id,
            Enrollment.status.in_((EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED)),
        )
        .limit(1)
    )
    return found is not None


def leave_plan(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> bool:
    """Cancel the subscriber's running enrollment in `plan_id`, settling its pending steps as
    skipped (a sender holding one re-reads the enrollment before DATA); False if none ran."""
    enrollment = session.scalar(
        select(Enrollment.id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.plan_id == plan_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .with_for_update()
    )
    if enrollment is None:
        return False
    cancel(session, Enrollment.id == enrollment, "left the plan", now)
    return True


def active_plan_ids(session: Session, subscriber_id: int) -> list[str]:
    """The plans running for the subscriber, by id."""
    return list(
        session.scalars(
            select(Enrollment.plan_id).where(
                Enrollment.subscriber_id == subscriber_id,
                Enrollment.status == EnrollmentStatus.ACTIVE,
            )
        )
    )
