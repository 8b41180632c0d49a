"""Which plan ids the enrollments run under, and moving them to a renamed plan."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from campaign.domain.statuses import EnrollmentStatus
from campaign.storage.models import Enrollment


def active_enrollments_by_plan(session: Session) -> dict[str, int]:
    """How many active enrollments run under each plan id."""
    rows = session.execute(
        select(Enrollment.plan_id, func.count())
        .where(Enrollment.status == EnrollmentStatus.ACTIVE)
        .group_by(Enrollment.plan_id)
    )
    return {str(plan_id): int(count) for plan_id, count in rows}


def count_enrollments(session: Session, plan_id: str) -> int:
    """Every enrollment under `plan_id`, whatever its status (history included)."""
    return int(session.scalar(select(func.count()).where(Enrollment.plan_id == plan_id)) or 0)


def move_enrollments(session: Session, old: str, new: str) -> int:
    """Put every enrollment of plan `old` (history included) under `new`; how many moved."""
    result = session.execute(
        update(Enrollment).where(Enrollment.plan_id == old).values(plan_id=new)
    )
    return int(getattr(result, "rowcount", 0) or 0)
