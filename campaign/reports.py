"""Numbers for operators and marketers: subscribers by status, and per step sent/failed/pending."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from campaign import store
from campaign.db import Database
from campaign.plan import Plan

#: An unsubscribe this soon after an email is counted against that email's step.
UNSUBSCRIBE_WINDOW = timedelta(hours=48)


@dataclass(frozen=True)
class StepStats:
    key: str
    day: int
    sent: int
    bounced: int
    failed: int
    skipped: int
    pending: int
    unsubscribes_48h: int
    clicks: int


def stats(db: Database, plan: Plan) -> dict[str, Any]:
    """Subscribers by status and, per step, how many were sent, failed, and are still to go."""
    with db.transaction() as session:
        by_status = store.count_subscribers_by_status(session)
        deliveries = store.count_deliveries_by_step(session, plan.id)
        waiting = store.count_active_by_last_day(session, plan.id)
        leavers = store.unsubscribes_after_step(session, plan.id, UNSUBSCRIBE_WINDOW)
        clicks = store.clicks_by_step(session, plan.id)
    steps = []
    for step in plan.steps:
        # pending: active enrollments that have not got past this step yet.
        pending = sum(count for day, count in waiting.items() if day < step.day)
        steps.append(
            StepStats(
                key=step.key,
                day=step.day,
                sent=deliveries.get((step.key, "sent"), 0),
                bounced=deliveries.get((step.key, "bounced"), 0),
                failed=deliveries.get((step.key, "failed"), 0),
                skipped=deliveries.get((step.key, "skipped"), 0),
                pending=pending,
                unsubscribes_48h=leavers.get(step.key, 0),
                clicks=clicks.get(step.key, 0),
            )
        )
    statuses = ("pending", "active", "unsubscribed", "bounced", "complained")
    return {
        "plan": plan.id,
        "name": plan.name,
        "subscribers": {status: by_status.get(status, 0) for status in statuses},
        "steps": [asdict(s) for s in steps],
    }


def operational_snapshot(db: Database, plan: Plan, now: datetime) -> dict[str, Any]:
    """What /metrics reports: database numbers, the last pass's age, whether sending is paused."""
    with db.transaction() as session:
        beat = store.latest_heartbeat(session)
        return {
            "emails": store.count_deliveries_by_step(session, plan.id),
            "subscribers": store.count_subscribers_by_status(session),
            "backlog": store.due_count(session, plan.id, now),
            "last_pass_age": (now - beat[0]).total_seconds() if beat else None,
            "paused": bool(beat and beat[1]),
        }


def sending_health(db: Database, now: datetime) -> tuple[float | None, str | None]:
    """Seconds since any scheduler finished a pass (None: never), and why sending is paused."""
    with db.transaction() as session:
        beat = store.latest_heartbeat(session)
    if beat is None:
        return None, None
    return (now - beat[0]).total_seconds(), beat[1]


def active_by_last_day(db: Database, plan: Plan) -> dict[int, int]:
    """Active subscribers by the plan day they have reached (for `plan diff`)."""
    with db.transaction() as session:
        return store.count_active_by_last_day(session, plan.id)
