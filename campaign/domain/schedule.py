"""Timing maths, pure: when each step of a plan is due for a subscriber, DST-correct.

Day N is due at the plan's send time on the Nth local calendar day after enrolment; day 0 is due
at enrolment. At most one daily email per local day: a late step pushes the next ones later
instead of letting them burst.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaign.domain.plan import Plan, Step

DEFAULT_TIMEZONE = "UTC"


def zone(name: str) -> ZoneInfo:
    """The IANA zone; raise ValueError with the name for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe", too long
        raise ValueError(f"{name[:64]!r} is not an IANA time zone (e.g. Europe/Berlin)") from exc


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    """The calendar date at `instant` on a wall clock in `tz`."""
    return instant.astimezone(tz).date()


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock time `at` on `day` in `tz`.

    A wall time skipped by a DST jump (e.g. 02:30 on a spring-forward night) resolves to the
    same distance after the jump; an ambiguous one (autumn) takes its first occurrence.
    """
    wall = datetime.combine(day, at, tzinfo=tz)  # fold=0: the earlier offset
    instant = wall.astimezone(UTC)
    return instant


def nominal_due(plan: Plan, step: Step, started_at: datetime, tz: ZoneInfo) -> datetime:
    """When `step` is due if nothing ran late: enrolment for day 0, else send time on day N."""
    if step.day == 0:
        return started_at
    return local_instant(local_date(started_at, tz) + timedelta(days=step.day), plan.send_time, tz)


def due_at(
    plan: Plan, step: Step, started_at: datetime, tz: ZoneInfo, last_sent_at: datetime | None
) -> datetime:
    """When `step` is due, never on the same local day as the previous email."""
    due = nominal_due(plan, step, started_at, tz)
    if last_sent_at is None:
        return due
    earliest = local_instant(local_date(last_sent_at, tz) + timedelta(days=1), plan.send_time, tz)
    return max(due, earliest)


def retry_delay(attempts: int, base_seconds: int, jitter: float) -> timedelta:
    """Exponential backoff base * 2^(attempts-1), capped at 6 hours, times `jitter` (0.5-1.5)."""
    seconds = min(base_seconds * 2 ** max(attempts - 1, 0), 6 * 3600)
    return timedelta(seconds=seconds * jitter)


def timeline(
    plan: Plan, started_at: datetime, tz: ZoneInfo, last_day: int | None = None
) -> list[tuple[Step, datetime]]:
    """When each step goes out for someone enrolling at `started_at`, if no pass runs late."""
    entries: list[tuple[Step, datetime]] = []
    last_sent: datetime | None = None
    for step in plan.steps:
        if last_day is not None and step.day > last_day:
            break
        last_sent = due_at(plan, step, started_at, tz, last_sent)
        entries.append((step, last_sent))
    return entries
