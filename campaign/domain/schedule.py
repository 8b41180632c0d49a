"""Timing maths, pure: when each step of a plan is due for a subscriber, DST-correct.

Day N is due at its send time on the Nth local calendar day after enrolment, or on the next of
its sending days; day 0 is due at enrolment. At most one daily email per local day: a late or
moved step pushes the next ones later instead of letting them burst. A late step goes out only
within a send window (`window_opening`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaign.domain.plan import Plan, Step
from campaign.domain.weekdays import EVERY_DAY

DEFAULT_TIMEZONE = "UTC"
MIDNIGHT = time(0, 0)


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
    """When `step` is due by its day alone: enrolment for day 0, else the step's send time on
    the Nth local day after enrolment, whatever weekday that is (see `due_at`)."""
    if step.day == 0:
        return started_at
    day = local_date(started_at, tz) + timedelta(days=step.day)
    return local_instant(day, plan.send_time_of(step), tz)


def sending_day(plan: Plan, step: Step, day: date) -> date:
    """The first local date on or after `day` that is one of `step`'s sending days."""
    days = plan.send_days_of(step)
    for offset in range(7):
        if (day + timedelta(days=offset)).weekday() in days:
            return day + timedelta(days=offset)
    raise ValueError(f"step {step.key!r} has no sending day")  # the schema refuses that


def due_at(
    plan: Plan, step: Step, started_at: datetime, tz: ZoneInfo, last_sent_at: datetime | None
) -> datetime:
    """When `step` is due: at its send time on the first of its sending days that is no
    earlier than its own day (enrolment + N) and later than the previous email's local day.

    So a step falling on a non-sending day moves to the next sending day, and the steps after
    it move along, one email per local day, order kept. The welcome (day 0, nothing sent
    yet) is due at enrolment, whatever the day: it carries what the signup promised.
    """
    if step.day == 0 and last_sent_at is None:
        return started_at
    day = local_date(started_at, tz) + timedelta(days=step.day)
    if last_sent_at is not None:
        day = max(day, local_date(last_sent_at, tz) + timedelta(days=1))
    due = local_instant(sending_day(plan, step, day), plan.send_time_of(step), tz)
    return max(due, started_at)


def chained_start(
    following: Plan, graduated_at: datetime, tz: ZoneInfo
) -> tuple[Step, datetime] | None:
    """A graduate chained into `following` (`then:`): its first step after day 0 (the welcome
    goes once) and when it is due, that many days after graduation, on one of that step's
    sending days, at its send time. None when the plan has no step after day 0."""
    first = next((step for step in following.steps if step.day > 0), None)
    if first is None:
        return None
    day = sending_day(following, first, local_date(graduated_at, tz) + timedelta(days=first.day))
    return first, local_instant(day, following.send_time_of(first), tz)


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


def planned_due(plan: Plan, step: Step, started_at: datetime, tz: ZoneInfo) -> datetime:
    """When `step` is due if every step before it went out on time (its `timeline` entry):
    the instant lateness is measured from."""
    if all(plan.send_days_of(s) == EVERY_DAY for s in plan.steps):
        # Steps are on distinct increasing days: none is pushed by the one before it.
        return nominal_due(plan, step, started_at, tz)
    for planned, at in timeline(plan, started_at, tz, step.day):
        if planned.key == step.key:
            return at
    return nominal_due(plan, step, started_at, tz)  # not one of the plan's steps


def window_opening(plan: Plan, step: Step, now: datetime, tz: ZoneInfo) -> datetime | None:
    """None when `now` is inside one of `step`'s send windows, else when the next one opens.

    A window runs from the step's send time for the plan's `send_window` on each of the
    step's sending days, and ends with that local day at the latest: a late step waits for
    the subscriber's next window rather than reaching them in the middle of the night.
    """
    days, at = plan.send_days_of(step), plan.send_time_of(step)
    today = local_date(now, tz)
    for offset in range(8):  # a sending day comes within a week
        day = today + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        opens = local_instant(day, at, tz)
        if now < opens:
            return opens
        closes = min(opens + plan.send_window, local_instant(day + timedelta(days=1), MIDNIGHT, tz))
        if now < closes:
            return None
    raise ValueError(f"step {step.key!r} has no sending day")  # the schema refuses that
