"""A pass's timing, pure: when a claimed step and the one after it are due under the current
plan, whether a claimed step must wait (early, or outside its send window), whether it is too
late to send (catch-up), and when a retry may go. Each takes the instant it is about (`now`,
`sent_at`) as a value; nothing here reads a clock."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from campaign.domain import schedule
from campaign.domain.plan import Plan, Step

if TYPE_CHECKING:  # the claim is a plain value; its module brings the database along
    from campaign.storage.store import Claim


def step_due(plan: Plan, claim: Claim) -> datetime | None:
    """When the claimed step is due under `plan` (None: it is no longer in the plan)."""
    step = plan.step_by_key(claim.step_key)
    if step is None:
        return None
    tz = zone_or_utc(claim.timezone)
    return schedule.due_at(plan, step, claim.started_at, tz, claim.last_sent_at)


def next_due(plan: Plan, claim: Claim, sent_at: datetime | None) -> datetime | None:
    """When the step after `claim` is due, the claimed one sent at `sent_at` (None: not
    sent); None when the plan is finished."""
    following = next((s for s in plan.steps if s.day > claim.step_day), None)
    if following is None:
        return None
    tz = zone_or_utc(claim.timezone)
    last_sent = sent_at or claim.last_sent_at
    return schedule.due_at(plan, following, claim.started_at, tz, last_sent)


def too_late(plan: Plan, claim: Claim, now: datetime) -> bool:
    """Under `catch_up: {skip_after: H}`, a daily step that cannot go out within H hours of
    the time it was meant to go (waiting for its send window counts) is not sent.

    The welcome email (day 0) always goes: it carries what the signup promised.
    """
    step = plan.step_by_key(claim.step_key)
    if step is None or plan.skip_after is None or step.day == 0:
        return False
    tz = zone_or_utc(claim.timezone)
    goes_at = schedule.window_opening(plan, step, now, tz) or now
    return goes_at - _meant_at(plan, step, claim, tz) > plan.skip_after


def _meant_at(plan: Plan, step: Step, claim: Claim, tz: ZoneInfo) -> datetime:
    """When the claimed step was meant to go: its planned time, or later where sending moved
    it on purpose, which is not lateness. One lesson a day, in order: after a lesson that went
    a day late the next follows a day later. The daily cap (MAX_PER_DAY) holds a lesson to a
    later day by setting when it is due: a first try (no attempt yet) counts from there, and
    so does a retry, from when its delivery was first due (the relay's trouble since then is
    lateness; a retry's own due time is its back-off, not a plan)."""
    meant = max(
        schedule.planned_due(plan, step, claim.started_at, tz),
        schedule.due_at(plan, step, claim.started_at, tz, claim.last_sent_at),
    )
    moved_to = claim.due_at if claim.attempts == 0 else claim.first_due_at
    return meant if moved_to is None else max(meant, moved_to)


def held_until(plan: Plan, claim: Claim, now: datetime) -> datetime | None:
    """When a claimed step may go if not at `now` (None: it may go now, or the pass settles
    it otherwise: a step gone from the plan, one too late under skip_after).

    Early under the current plan: its own due time. Due but outside its send window (a late
    step, a retry): the next window's opening. The welcome and its retries go at once.
    """
    step = plan.step_by_key(claim.step_key)
    due = step_due(plan, claim)
    if step is None or due is None:
        return None
    if due > now:
        return due
    if step.day == 0 and claim.last_sent_at is None:
        return None
    opening = schedule.window_opening(plan, step, now, zone_or_utc(claim.timezone))
    if opening is None or too_late(plan, claim, now):
        return None
    return opening


def retry_at(now: datetime, attempts: int, base_seconds: int, jitter: float) -> datetime:
    """When try number `attempts + 1` may go: exponential back-off from `now`, times
    `jitter` (0.5-1.5, so that a burst of failures does not come back as one burst)."""
    return now + schedule.retry_delay(attempts, base_seconds, jitter)


def zone_or_utc(name: str) -> ZoneInfo:
    """The subscriber's zone; UTC for a name this machine does not know (any more)."""
    try:
        return schedule.zone(name)
    except ValueError:
        return schedule.zone(schedule.DEFAULT_TIMEZONE)
