"""The console's Today page's queries: emails sent and due by hour, welcome latencies, the
schedulers' heartbeats. Hours are grouped in SQL (a day's sends at 1M subscribers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaign.domain.statuses import EnrollmentStatus
from campaign.storage.models import Delivery, Enrollment, Heartbeat

#: the most welcome latencies read for percentiles (the newest).
LATENCY_SAMPLE = 10_000


class SchedulerBeat(NamedTuple):
    owner: str
    started_at: datetime
    last_pass_at: datetime
    last_pass_seconds: float
    paused_reason: str | None


def _hour(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc("hour", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


def _by_hour(rows: Any) -> dict[datetime, int]:
    return {
        datetime.strptime(key, "%Y-%m-%d %H").replace(tzinfo=UTC): int(count)
        for key, count in rows
        if key
    }


def sent_by_hour(session: Session, since: datetime, until: datetime) -> dict[datetime, int]:
    """Emails the mail server accepted in [since, until], by the hour they were sent (UTC)."""
    hour = _hour(session, Delivery.sent_at)
    rows = session.execute(
        select(hour, func.count())
        .where(Delivery.sent_at >= since, Delivery.sent_at <= until)
        .group_by(hour)
    )
    return _by_hour(rows)


def due_by_hour(
    session: Session, plan_id: str, since: datetime, until: datetime
) -> dict[datetime, int]:
    """Active enrollments whose next email is due in [since, until), by hour (UTC)."""
    hour = _hour(session, Enrollment.next_due_at)
    rows = session.execute(
        select(hour, func.count())
        .where(
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_due_at >= since,
            Enrollment.next_due_at < until,
            Enrollment.plan_id == plan_id,
        )
        .group_by(hour)
    )
    return _by_hour(rows)


def welcome_latencies(
    session: Session, plan_id: str, step_key: str, since: datetime
) -> list[float]:
    """Seconds from an enrollment's start to its welcome's 250, for welcomes sent since."""
    rows = session.execute(
        select(Delivery.sent_at, Enrollment.started_at)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Delivery.sent_at >= since,
            Delivery.step_key == step_key,
            Enrollment.plan_id == plan_id,
        )
        .order_by(Delivery.sent_at.desc())
        .limit(LATENCY_SAMPLE)
    )
    return [
        max((sent - started).total_seconds(), 0.0) for sent, started in rows if sent and started
    ]


def scheduler_beats(session: Session) -> list[SchedulerBeat]:
    """Every scheduler's heartbeat, the most recent pass first."""
    rows = session.scalars(select(Heartbeat).order_by(Heartbeat.last_pass_at.desc()).limit(20))
    return [
        SchedulerBeat(
            r.owner, r.started_at, r.last_pass_at, r.last_pass_seconds or 0.0, r.paused_reason
        )
        for r in rows
    ]
