"""What the console's Today page shows: emails sent in the last 24 hours and due in the next
24, by hour; welcome latency; bounce and complaint rates (`today`: about a second at a million
subscribers on PostgreSQL, so the page counts them in the background, `TodayNumbers`); and the
schedulers' passes (`schedulers`: a few rows, read at every request)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign.domain.plan import Plan
from campaign.insights import reports
from campaign.insights.kept import Kept
from campaign.storage import store
from campaign.storage.db import Database

DAY = timedelta(hours=24)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class HourBar:
    """One hour of the chart: when it starts (UTC), how many emails, sent or due."""

    start: datetime
    count: int
    past: bool


@dataclass(frozen=True)
class Scheduler:
    owner: str
    last_pass_at: datetime
    last_pass_age_seconds: float
    last_pass_seconds: float
    paused_reason: str | None


@dataclass(frozen=True)
class Today:
    now: datetime
    #: 48 hours: 24 before the current hour's end, 24 after.
    hours: list[HourBar]
    sent_last_24h: int
    due_next_24h: int
    #: due now or overdue, not sent yet.
    backlog: int
    welcome_p50_seconds: float | None
    welcome_p95_seconds: float | None
    welcomes_last_24h: int
    #: since the start, every plan: emails accepted by the mail server, bounces, complaints.
    sent_total: int
    bounced_total: int
    complained_total: int

    @property
    def bounce_rate(self) -> float | None:
        """Emails that bounced, of those handed to the mail server (sent or bounced)."""
        handed = self.sent_total + self.bounced_total
        return self.bounced_total / handed if handed else None

    @property
    def complaint_rate(self) -> float | None:
        """Spam complaints per email sent (the measure mailbox providers use: keep < 0.1 %)."""
        return self.complained_total / self.sent_total if self.sent_total else None

    @property
    def busiest_hour(self) -> int:
        return max((h.count for h in self.hours), default=0)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class TodayNumbers(Kept[Today]):
    """The last count of the Today page's numbers, one per console: counted in the
    background at most once a `ttl`, the page waiting at most `patience` for the first."""

    def numbers(
        self, db: Database, plan: Plan, now: datetime
    ) -> tuple[Today | None, datetime | None]:
        """The numbers and when they were counted; (None, None) while the first count runs."""
        return self.get(plan.id, now, lambda: today(db, plan, now))


def schedulers(db: Database, now: datetime) -> list[Scheduler]:
    """Each scheduler's last pass, how long ago it ended, and why it is paused if it is."""
    with db.read() as session:
        beats = store.scheduler_beats(session)
    return [
        Scheduler(
            b.owner,
            b.last_pass_at,
            (now - b.last_pass_at).total_seconds(),
            b.last_pass_seconds,
            b.paused_reason,
        )
        for b in beats
    ]


def today(db: Database, plan: Plan, now: datetime) -> Today:
    """The Today page's numbers at `now`, read in one read-only transaction."""
    hour_now = now.replace(minute=0, second=0, microsecond=0)
    first = hour_now - 23 * HOUR
    with db.read() as session:
        sent = store.sent_by_hour(session, first, now)
        due = store.due_by_hour(session, plan.id, now, hour_now + 25 * HOUR)
        backlog = store.due_count(session, plan.id, now)
        latencies = store.welcome_latencies(session, plan.id, plan.steps[0].key, now - DAY)
        by_status = store.deliveries_by_status(session)
        people = store.count_subscribers_by_status(session)
    past = [HourBar(first + i * HOUR, sent.get(first + i * HOUR, 0), True) for i in range(24)]
    ahead = [
        HourBar(hour_now + i * HOUR, due.get(hour_now + i * HOUR, 0), False) for i in range(1, 25)
    ]
    # The current hour's bar shows what was sent; what is due later in it joins the next bar.
    if due.get(hour_now):
        ahead[0] = HourBar(ahead[0].start, ahead[0].count + due[hour_now], False)
    return Today(
        now=now,
        hours=past + ahead,
        sent_last_24h=sum(h.count for h in past),
        due_next_24h=sum(h.count for h in ahead),
        backlog=backlog,
        welcome_p50_seconds=percentile(latencies, 0.50),
        welcome_p95_seconds=percentile(latencies, 0.95),
        welcomes_last_24h=len(latencies),
        sent_total=by_status.get("sent", 0),
        bounced_total=by_status.get("bounced", 0),
        complained_total=people.get("complained", 0),
    )


#: Re-exported for the page: the deployment's health as this process sees it.
Health = reports.Health
