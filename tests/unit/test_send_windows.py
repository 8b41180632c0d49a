"""Send days and send windows: steps move to the subscriber's next sending day, the rest of the
plan with them, and a late step waits for the next window instead of going out at night."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaign.delivery import timing
from campaign.domain.plan import Plan, Step
from campaign.domain.schedule import (
    due_at,
    local_instant,
    nominal_due,
    planned_due,
    timeline,
    window_opening,
)
from campaign.domain.weekdays import EVERY_DAY, describe
from campaign.storage.store import Claim

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = frozenset(range(5))  # Monday to Friday
FRIDAY_NOON = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)  # 12:00 EST, Friday 4 December


def _step(day: int, **overrides: object) -> Step:
    key = "welcome" if day == 0 else f"day{day:02d}"
    return replace(Step(day, key, day, f"Day {day}", "", "a.html"), **overrides)


def _plan(
    days: int = 10,
    *,
    send_days: frozenset[int] = EVERY_DAY,
    send_time: time = time(7, 0),
    window: timedelta = timedelta(hours=12),
    steps: tuple[Step, ...] | None = None,
    skip_after: timedelta | None = None,
) -> Plan:
    return Plan(
        id="demo",
        name="Demo",
        sender_name=None,
        send_time=send_time,
        steps=steps or tuple(_step(day) for day in range(days + 1)),
        source=Path("plan.yaml"),
        send_days=send_days,
        send_window=window,
        skip_after=skip_after,
    )


def _local(instant: datetime, tz: ZoneInfo = NEW_YORK) -> str:
    return f"{instant.astimezone(tz):%a %d %H:%M}"


def test_a_weekday_plan_started_on_friday_skips_the_weekend_and_moves_the_rest() -> None:
    """Welcome on Friday at once; Saturday's and Sunday's steps go Monday and Tuesday, and every
    later step moves along: one email a weekday, in order."""
    plan = _plan(6, send_days=WEEKDAYS)

    sent = [_local(at) for _, at in timeline(plan, FRIDAY_NOON, NEW_YORK)]

    assert sent == [
        "Fri 04 12:00",  # the welcome, at signup
        "Mon 07 07:00",  # day 1 (Saturday)
        "Tue 08 07:00",  # day 2 (Sunday), after Monday's
        "Wed 09 07:00",  # day 3 (Monday)
        "Thu 10 07:00",
        "Fri 11 07:00",
        "Mon 14 07:00",  # day 6 would be Thursday; the weekend again
    ]


def test_the_welcome_goes_at_once_even_on_a_non_sending_day() -> None:
    """Signing up on a Saturday still brings the welcome (the promise) at once."""
    saturday = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)  # 18:00 EST

    assert due_at(_plan(send_days=WEEKDAYS), _step(0), saturday, NEW_YORK, None) == saturday


def test_a_step_keeps_its_own_send_time_and_days() -> None:
    """A step's own send_time and send_days override the plan's for that step only."""
    steps = (
        _step(0),
        _step(1),
        _step(2, send_time=time(18, 30)),
        _step(3, send_days=frozenset({5})),  # Saturdays only
        _step(4),
    )
    plan = _plan(steps=steps, send_days=WEEKDAYS)
    monday = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)  # 09:00 EST

    sent = [_local(at) for _, at in timeline(plan, monday, NEW_YORK)]

    assert sent == ["Mon 07 09:00", "Tue 08 07:00", "Wed 09 18:30", "Sat 12 07:00", "Mon 14 07:00"]


def test_a_moved_step_is_still_never_before_its_own_day() -> None:
    """A step never goes before its nominal day, however the steps before it moved."""
    plan = _plan(10, send_days=frozenset({0, 3}))  # Mondays and Thursdays

    for step, at in timeline(plan, FRIDAY_NOON, NEW_YORK):
        assert at >= nominal_due(plan, step, FRIDAY_NOON, NEW_YORK)


def test_send_days_keep_local_mornings_across_the_autumn_change() -> None:
    """In Berlin the moved steps stay at 07:00 local on both sides of 25 October 2026."""
    plan = _plan(4, send_days=WEEKDAYS)
    friday = datetime(2026, 10, 23, 10, 0, tzinfo=UTC)

    sent = [at for _, at in timeline(plan, friday, BERLIN)][1:]

    assert [f"{at.astimezone(BERLIN):%a %d %H:%M}" for at in sent] == [
        "Mon 26 07:00",
        "Tue 27 07:00",
        "Wed 28 07:00",
        "Thu 29 07:00",
    ]
    assert sent[0] == datetime(2026, 10, 26, 6, 0, tzinfo=UTC)  # CET, UTC+1 by then


def test_a_send_time_in_the_spring_gap_goes_after_the_jump_that_day() -> None:
    """A 02:30 send time on New York's spring-forward Sunday goes at 03:30 EDT that same day."""
    plan = _plan(3, send_days=frozenset({6}), send_time=time(2, 30))  # Sundays
    started = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)  # Friday 6 March

    [_, (_, day1), *_] = timeline(plan, started, NEW_YORK)

    assert day1 == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert _local(day1) == "Sun 08 03:30"


def test_planned_due_is_the_timeline_entry() -> None:
    """Lateness is measured from when a step goes if nothing runs late: after the weekend."""
    plan = _plan(3, send_days=WEEKDAYS)

    assert _local(planned_due(plan, plan.steps[2], FRIDAY_NOON, NEW_YORK)) == "Tue 08 07:00"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("Tue 08 03:00", "Tue 08 07:00"),  # before the window: this morning's
        ("Tue 08 07:00", None),  # the window opens
        ("Tue 08 18:59", None),
        ("Tue 08 19:00", "Wed 09 07:00"),  # twelve hours later it has closed
        ("Fri 11 23:00", "Mon 14 07:00"),  # no window at the weekend
        ("Sat 12 10:00", "Mon 14 07:00"),
    ],
)
def test_a_late_step_waits_for_the_next_window(now: str, expected: str | None) -> None:
    """Outside 07:00-19:00 on a weekday, the step waits for the next such window."""
    plan = _plan(send_days=WEEKDAYS)
    day, clock = now.split()[1:]
    wall = datetime(2026, 12, int(day), int(clock[:2]), int(clock[3:]), tzinfo=NEW_YORK)

    opening = window_opening(plan, plan.steps[1], wall.astimezone(UTC), NEW_YORK)

    assert (None if opening is None else _local(opening)) == expected


def test_a_window_ends_with_its_local_day() -> None:
    """An evening send time's window stops at midnight: 00:30 waits for 20:00 that day."""
    plan = _plan(send_time=time(20, 0))
    late_evening = datetime(2026, 12, 8, 23, 59, tzinfo=NEW_YORK).astimezone(UTC)
    after_midnight = datetime(2026, 12, 9, 0, 30, tzinfo=NEW_YORK).astimezone(UTC)

    assert window_opening(plan, plan.steps[1], late_evening, NEW_YORK) is None
    opening = window_opening(plan, plan.steps[1], after_midnight, NEW_YORK)
    assert opening is not None
    assert _local(opening) == "Wed 09 20:00"


def _claim(plan: Plan, key: str, started: datetime, last_sent: datetime | None) -> Claim:
    step = plan.step_by_key(key)
    assert step is not None
    return Claim(
        delivery_id=1,
        message_id="<m@example.org>",
        attempts=0,
        enrollment_id=1,
        step_key=key,
        step_day=step.day,
        due_at=started,
        started_at=started,
        last_sent_at=last_sent,
        subscriber_id=1,
        email="ann@example.org",
        first_name="Ann",
        timezone="America/New_York",
    )


def test_a_claim_found_at_night_is_held_until_the_morning_window() -> None:
    """Day 1, late after an outage that ends at 03:00 local, is held until 07:00."""
    plan = _plan()
    monday = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    claim = _claim(plan, "day01", monday, monday)
    three_am = datetime(2026, 12, 9, 3, 0, tzinfo=NEW_YORK).astimezone(UTC)

    held = timing.held_until(plan, claim, three_am)

    assert held is not None
    assert _local(held) == "Wed 09 07:00"
    assert timing.held_until(plan, claim, held) is None


def test_the_welcome_and_its_retries_are_never_held_for_a_window() -> None:
    """The welcome goes at once at any hour, and so does a retry of it."""
    plan = _plan(send_days=WEEKDAYS)
    saturday_night = datetime(2026, 12, 6, 3, 0, tzinfo=NEW_YORK).astimezone(UTC)
    claim = _claim(plan, "welcome", saturday_night, None)

    assert timing.held_until(plan, claim, saturday_night) is None
    assert timing.held_until(plan, claim, saturday_night + timedelta(hours=2)) is None


def test_a_step_not_yet_due_is_held_until_its_due_time() -> None:
    """A claim that is early under the plan waits for its own due time, not a window's."""
    plan = _plan(send_days=WEEKDAYS)
    claim = _claim(plan, "day01", FRIDAY_NOON, FRIDAY_NOON)

    held = timing.held_until(plan, claim, FRIDAY_NOON + timedelta(hours=1))

    assert held is not None
    assert _local(held) == "Mon 07 07:00"


def test_skip_after_counts_the_wait_for_the_window() -> None:
    """With skip_after 22 h, a step found at 03:00, 20.5 h late, whose next window opens 24 h
    after its planned time is skipped now: neither held nor sent at night."""
    plan = _plan(skip_after=timedelta(hours=22), send_time=time(6, 30))
    monday = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    claim = _claim(plan, "day01", monday, monday)  # planned Tue 06:30
    wednesday_3am = datetime(2026, 12, 9, 3, 0, tzinfo=NEW_YORK).astimezone(UTC)

    assert timing.too_late(plan, claim, wednesday_3am)
    assert timing.held_until(plan, claim, wednesday_3am) is None  # the pass skips it


def test_skip_after_measures_lateness_from_the_moved_day() -> None:
    """A step moved past the weekend by send_days is on time on Monday, not 48 hours late."""
    plan = _plan(send_days=WEEKDAYS, skip_after=timedelta(hours=6))
    claim = _claim(plan, "day01", FRIDAY_NOON, FRIDAY_NOON)
    monday_morning = datetime(2026, 12, 7, 7, 5, tzinfo=NEW_YORK).astimezone(UTC)

    assert not timing.too_late(plan, claim, monday_morning)
    assert timing.held_until(plan, claim, monday_morning) is None


@pytest.mark.parametrize(
    ("first_due_days", "late"),
    [
        (None, True),  # a delivery from before first_due_at was kept: counts from the plan
        (0, True),  # first due on its planned day: a retry two days on is late
        (2, False),  # the daily cap held it two days: its retry that morning is on time
    ],
)
def test_a_retry_counts_lateness_from_when_its_delivery_was_first_due(
    first_due_days: int | None, late: bool
) -> None:
    """skip_after 6 h: a retry (its own due time being the back-off's) is late by the day its
    delivery was first due, which the daily cap may have moved past the plan."""
    plan = _plan(skip_after=timedelta(hours=6))
    monday = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    planned = datetime(2026, 12, 8, 7, 0, tzinfo=NEW_YORK).astimezone(UTC)  # day01, Tue 07:00
    retry_time = planned + timedelta(days=2, minutes=10)
    first_due = None if first_due_days is None else planned + timedelta(days=first_due_days)
    claim = replace(
        _claim(plan, "day01", monday, None),
        attempts=1,
        due_at=retry_time,
        first_due_at=first_due,
    )

    assert timing.too_late(plan, claim, retry_time) is late


@pytest.mark.parametrize(
    ("days", "text"),
    [
        (EVERY_DAY, "every day"),
        (WEEKDAYS, "Mon-Fri"),
        (frozenset({0, 2, 4}), "Mon, Wed, Fri"),
        (frozenset({5, 6}), "Sat, Sun"),
        (frozenset({0, 1, 2, 3, 5}), "Mon-Thu, Sat"),
    ],
)
def test_sending_days_read_as_people_say_them(days: frozenset[int], text: str) -> None:
    """Sending days are shown as a range when they are consecutive, else listed."""
    assert describe(days) == text


# -- properties -------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"]
# 02:15 is inside a spring-forward gap in New York, Berlin and Lord Howe; 00:30 in Santiago.
SEND_TIMES = [time(7, 0), time(2, 15), time(0, 30), time(21, 45)]
FROM_2026 = datetime(2026, 1, 1, tzinfo=UTC)
TWO_YEARS = int((datetime(2028, 1, 1, tzinfo=UTC) - FROM_2026).total_seconds()) - 1
DAY_SETS = st.frozensets(st.integers(0, 6), min_size=1)


def _expected_wall(target: date, send_time: time, tz: ZoneInfo) -> datetime:
    """The wall clock reading for `send_time` on `target`, moved on by the jump if skipped."""
    wall = datetime.combine(target, send_time, tzinfo=tz)
    before, after = wall.replace(fold=0).utcoffset(), wall.replace(fold=1).utcoffset()
    assert before is not None
    assert after is not None
    return datetime.combine(target, send_time) + max(after - before, timedelta(0))


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """A plan of up to 20 steps on increasing days, some with their own time or days."""
    days = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=20)))
    steps = [_step(0)]
    for index, day in enumerate(days, start=1):
        own_time = draw(st.none() | st.sampled_from(SEND_TIMES))
        own_days = draw(st.none() | DAY_SETS)
        steps.append(replace(_step(day, send_time=own_time, send_days=own_days), index=index))
    return _plan(
        steps=tuple(steps),
        send_days=draw(DAY_SETS),
        send_time=draw(st.sampled_from(SEND_TIMES)),
    )


@settings(database=None, deadline=None, max_examples=300)
@given(
    plan=plans(),
    zone_name=st.sampled_from(ZONES),
    offset=st.integers(0, TWO_YEARS),
)
# A weekday plan sending at 02:15, started on the Friday before New York's spring-forward.
@example(
    _plan(3, send_days=frozenset({6}), send_time=time(2, 15)),
    "America/New_York",
    int((datetime(2026, 3, 6, 17, tzinfo=UTC) - FROM_2026).total_seconds()),
)
def test_every_email_goes_on_a_sending_day_at_its_send_time_one_a_day(
    plan: Plan, zone_name: str, offset: int
) -> None:
    """For any start, zone, days and times: each daily email is on one of its sending days at
    its send time (or just after a DST gap), never before its own day, on strictly later
    local days, and on the first sending day it could use."""
    tz = ZoneInfo(zone_name)
    started = FROM_2026 + timedelta(seconds=offset)

    entries = timeline(plan, started, tz)

    assert entries[0][1] == started  # the welcome, at once
    dates = [at.astimezone(tz).date() for _, at in entries]
    assert all(a < b for a, b in pairwise(dates))
    for (step, at), previous in zip(entries[1:], dates, strict=False):
        local = at.astimezone(tz)
        assert local.date().weekday() in plan.send_days_of(step)
        assert local.replace(tzinfo=None) == _expected_wall(
            local.date(), plan.send_time_of(step), tz
        )
        assert at >= nominal_due(plan, step, started, tz)
        earliest = max(started.astimezone(tz).date() + timedelta(days=step.day), previous)
        skipped = [earliest + timedelta(days=n) for n in range((local.date() - earliest).days)]
        usable = [d for d in skipped if d > previous and d.weekday() in plan.send_days_of(step)]
        assert not usable, f"{step.key} waited past {usable[0]}"


@settings(database=None, deadline=None, max_examples=300)
@given(
    plan=plans(),
    zone_name=st.sampled_from(ZONES),
    offset=st.integers(0, TWO_YEARS),
    hours=st.integers(1, 24),
)
def test_a_held_step_waits_exactly_for_a_window_opening(
    plan: Plan, zone_name: str, offset: int, hours: int
) -> None:
    """At any instant a step is either inside one of its windows (a sending day, from its send
    time for the window's length, before midnight) or told the next opening: on a sending
    day, at its send time, later than now, itself inside a window."""
    plan = replace(plan, send_window=timedelta(hours=hours))
    step = plan.steps[-1]
    tz = ZoneInfo(zone_name)
    now = FROM_2026 + timedelta(seconds=offset)

    opening = window_opening(plan, step, now, tz)

    local = now.astimezone(tz)
    opens = local_instant(local.date(), plan.send_time_of(step), tz)
    inside = (
        local.date().weekday() in plan.send_days_of(step)
        and opens <= now < opens + plan.send_window
    )
    if opening is None:
        assert inside
    else:
        assert not inside
        assert opening > now
        at = opening.astimezone(tz)
        assert at.date().weekday() in plan.send_days_of(step)
        assert at.replace(tzinfo=None) == _expected_wall(at.date(), plan.send_time_of(step), tz)
        assert window_opening(plan, step, opening, tz) is None
        assert (at.date() - local.date()).days <= 7
