"""Numbers for operators and marketers: subscribers by status, and per step sent/failed/pending."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from campaign import store
from campaign.db import Database
from campaign.plan import Plan


@dataclass(frozen=True)
class StepStats:
    key: str
    day: int
    sent: int
    failed: int
    pending: int


def stats(db: Database, plan: Plan) -> dict[str, Any]:
    """Subscribers by status and, per step, how many were sent, failed, and are still to go."""
    with db.transaction() as session:
        by_status = store.count_subscribers_by_status(session)
        deliveries = store.count_deliveries_by_step(session, plan.id)
        waiting = store.count_active_by_next_step(session, plan.id)
    steps = []
    for step in plan.steps:
        # pending: active enrollments that have not got past this step yet.
        pending = sum(count for index, count in waiting.items() if index <= step.index)
        steps.append(
            StepStats(
                key=step.key,
                day=step.day,
                sent=deliveries.get((step.key, "sent"), 0),
                failed=deliveries.get((step.key, "failed"), 0),
                pending=pending,
            )
        )
    statuses = ("pending", "active", "unsubscribed", "bounced", "complained")
    return {
        "plan": plan.id,
        "subscribers": {status: by_status.get(status, 0) for status in statuses},
        "steps": [asdict(s) for s in steps],
    }
