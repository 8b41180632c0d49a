"""The daily cap across plans, decided while claiming: a person in several plans gets at most
`max_per_day` lesson emails (any step but a plan's day 0) per local day, whatever number of
scheduler processes claim at once.

Counted from the delivery log in the claim's transaction: lessons sent on the subscriber's
local today, plus lessons another pass holds right now (a running lease). Claimers of one
subscriber are serialised by the lock on the subscriber's row (PostgreSQL: the due query locks
it, SKIP LOCKED; SQLite: one writer), so the second one sees the first one's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from campaign.domain import schedule
from campaign.storage.fast_path import PlainSQL, naive_utc
from campaign.storage.models import utc_instant
from campaign.storage.store.leases import LeaseTime


@dataclass(frozen=True)
class DailyCap:
    """What the cap needs to know about the running plans."""

    max_per_day: int
    #: (plan id, step key) of each plan's day-0 step: what the signup promised goes at once,
    #: neither held back nor counted.
    free_steps: frozenset[tuple[str, str]]
    #: each plan's send time: a lesson held back goes on the next local day at this time.
    send_times: Mapping[str, time]
    #: (plan id, step key) -> the step's sending weekdays and send time (send windows): a
    #: lesson held back goes on the next of its sending days at its own time instead.
    step_times: Mapping[tuple[str, str], tuple[frozenset[int], time]] = field(default_factory=dict)


#: Lessons of these subscribers sent lately, or held by a pass right now (its lease runs).
_TAKEN_SQL = (
    "SELECT enrollments.subscriber_id, enrollments.plan_id, deliveries.step_key,"
    " deliveries.status, deliveries.sent_at"
    " FROM deliveries JOIN enrollments ON enrollments.id = deliveries.enrollment_id"
    " WHERE {subscriber_is_candidate} AND ((deliveries.status = 'sent'"
    " AND deliveries.sent_at >= :since) OR (deliveries.status = 'queued'"
    " AND enrollments.lease_expires_at > {lease_now}))"
)
_HOLD_SQL = "UPDATE enrollments SET next_due_at = :due, updated_at = :now WHERE id = :enrollment"


@dataclass(frozen=True)
class Candidate:
    """An enrollment of the batch whose next step is a lesson."""

    enrollment_id: int
    subscriber_id: int
    plan_id: str
    timezone: str
    started_at: datetime
    #: the lesson's step (its sending days and time, see DailyCap.step_times).
    step_key: str = ""


def held_back(
    sql: PlainSQL,
    cap: DailyCap,
    candidates: Sequence[Candidate],
    now: datetime,
    lease: LeaseTime,
) -> set[int]:
    """The enrollments among `candidates` whose lesson would pass the cap today: each moved
    to its subscriber's next local day that is one of the step's sending days, at the step's
    send time (the later steps move with it,
    as after any late step). Among one person's lessons due at once, the enrollment that
    started first goes first."""
    if not candidates:
        return set()
    params: dict[str, Any] = {"since": naive_utc(now - timedelta(days=2)), **lease.params()}
    subscribers = {c.subscriber_id for c in candidates}
    is_candidate = sql.any_of("enrollments.subscriber_id", "s", subscribers, params)
    lease_now = lease.now_sql(sql.is_sqlite)
    taken_sql = _TAKEN_SQL.format(subscriber_is_candidate=is_candidate, lease_now=lease_now)
    found = sql.rows(taken_sql, params)
    zones = {c.subscriber_id: _zone(c.timezone) for c in candidates}
    today = {sid: schedule.local_date(now, tz) for sid, tz in zones.items()}
    taken = dict.fromkeys(zones, 0)
    for subscriber_id, plan_id, step_key, status, sent_at in found:
        if (plan_id, step_key) in cap.free_steps:
            continue
        sent = utc_instant(sent_at)
        tz = zones[subscriber_id]
        if status == "queued" or (
            sent is not None and schedule.local_date(sent, tz) == today[subscriber_id]
        ):
            taken[subscriber_id] += 1
    held: set[int] = set()
    for candidate in sorted(candidates, key=lambda c: (c.started_at, c.enrollment_id)):
        subscriber_id = candidate.subscriber_id
        if taken[subscriber_id] < cap.max_per_day:
            taken[subscriber_id] += 1
            continue
        held.add(candidate.enrollment_id)
        tz = zones[subscriber_id]
        due = schedule.local_instant(*_next_sending(cap, candidate, today[subscriber_id]), tz)
        params = {
            "due": naive_utc(due),
            "now": naive_utc(now),
            "enrollment": candidate.enrollment_id,
        }
        sql.run(_HOLD_SQL, params)
    return held


def _next_sending(cap: DailyCap, candidate: Candidate, today: date) -> tuple[date, time]:
    """The local day after `today` that is one of the lesson's sending days, and its time."""
    days, at = cap.step_times.get(
        (candidate.plan_id, candidate.step_key), (frozenset(), cap.send_times[candidate.plan_id])
    )
    day = today + timedelta(days=1)
    for offset in range(7):
        if not days or (day + timedelta(days=offset)).weekday() in days:
            return day + timedelta(days=offset), at
    return day, at  # no sending day at all: the schema refuses that


def _zone(name: str) -> Any:
    try:
        return schedule.zone(name)
    except ValueError:
        return schedule.zone(schedule.DEFAULT_TIMEZONE)
