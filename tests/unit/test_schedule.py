"""When each email is due: local mornings, day by day, correct across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaign.domain.plan import Plan, Step
from campaign.domain.schedule import due_at, local_instant, nominal_due, retry_delay

BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/Los_Angeles",
    "America/New_York",
    "America/Santiago",  # DST jumps at local midnight
    "Asia/Kolkata",  # +05:30, no DST
    "Australia/Lord_Howe",  # a 30-minute DST jump
    "Pacific/Chatham",  # +12:45 / +13:45
]
# 02:15 and 00:30 fall inside spring-forward gaps in some of the zones above.
SEND_TIMES = [time(7, 0), time(2, 15), time(0, 30)]
FROM_2026 = datetime(2026, 1, 1, tzinfo=UTC)
TWO_YEARS = int((datetime(2028, 1, 1, tzinfo=UTC) - FROM_2026).total_seconds()) - 1


def _plan(send_time: time = time(7, 0), last_day: int = 60) -> Plan:
    steps = tuple(
        Step(
            index=day,
            key="welcome" if day == 0 else f"day{day:02d}",
            day=day,
            subject=f"Day {day}",
            preheader="",
            template="a.html",
        )
        for day in range(last_day + 1)
    )
    return Plan(
        id="demo",
        name="Demo",
        sender_name=None,
        send_time=send_time,
        steps=steps,
        source=Path("plan.yaml"),
    )


PLAN = _plan()
PLANS = {send_time: _plan(send_time) for send_time in SEND_TIMES}


def _seconds_from_2026(instant: datetime) -> int:
    return int((instant - FROM_2026).total_seconds())


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_day_zero_is_due_at_enrolment() -> None:
    """The welcome email is due the moment someone enrols, whatever the local time."""
    started = _utc(2026, 6, 10, 21, 17, 5)

    assert nominal_due(PLAN, PLAN.steps[0], started, BERLIN) == started
    assert due_at(PLAN, PLAN.steps[0], started, BERLIN, None) == started


def test_day_one_after_a_late_evening_enrolment_is_the_next_morning() -> None:
    """Someone enrolling at 23:30 local time gets day 1 at 07:00 the next local morning."""
    started = _utc(2026, 10, 21, 6, 30)  # 23:30 PDT on 20 October

    assert nominal_due(PLAN, PLAN.steps[1], started, LOS_ANGELES) == _utc(2026, 10, 21, 14, 0)


def test_day_one_after_an_early_morning_enrolment_is_the_following_day() -> None:
    """Someone enrolling at 02:00 local time gets day 1 the next day, not five hours later."""
    started = _utc(2026, 6, 10, 0, 0)  # 02:00 CEST on 10 June

    assert nominal_due(PLAN, PLAN.steps[1], started, BERLIN) == _utc(2026, 6, 11, 5, 0)


def test_day_n_is_on_the_nth_local_calendar_day() -> None:
    """Day 10 is due at 07:00 on the tenth local calendar day after the enrolment date."""
    started = _utc(2026, 2, 3, 20, 0)  # 01:30 IST on 4 February

    due = nominal_due(PLAN, PLAN.steps[10], started, KOLKATA)

    assert due == _utc(2026, 2, 14, 1, 30)  # 07:00 IST on 14 February


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (4, _utc(2026, 10, 24, 5, 0)),  # CEST, UTC+2
        (5, _utc(2026, 10, 25, 6, 0)),  # CET from 03:00 that morning, UTC+1
        (6, _utc(2026, 10, 26, 6, 0)),
    ],
)
def test_berlin_mornings_follow_the_autumn_clock_change(day: int, expected: datetime) -> None:
    """In Berlin 07:00 is 05:00 UTC before the end of summer time and 06:00 UTC from that day."""
    started = _utc(2026, 10, 20, 10, 0)

    assert nominal_due(PLAN, PLAN.steps[day], started, BERLIN) == expected


@pytest.mark.parametrize(
    ("started", "day", "expected"),
    [
        (_utc(2026, 10, 28, 19, 0), 3, _utc(2026, 10, 31, 14, 0)),  # PDT, UTC-7
        (_utc(2026, 10, 28, 19, 0), 4, _utc(2026, 11, 1, 15, 0)),  # PST, UTC-8
        (_utc(2026, 3, 5, 20, 0), 2, _utc(2026, 3, 7, 15, 0)),  # PST, UTC-8
        (_utc(2026, 3, 5, 20, 0), 3, _utc(2026, 3, 8, 14, 0)),  # PDT, UTC-7
    ],
)
def test_los_angeles_mornings_follow_both_clock_changes(
    started: datetime, day: int, expected: datetime
) -> None:
    """In Los Angeles the email stays at 07:00 local on both sides of each 2026 clock change."""
    due = nominal_due(PLAN, PLAN.steps[day], started, LOS_ANGELES)

    assert due == expected
    assert due.astimezone(LOS_ANGELES).time() == time(7, 0)


def test_a_wall_time_skipped_by_spring_forward_lands_an_hour_later() -> None:
    """02:30 on the night New York skips 02:00-03:00 resolves to 03:30 EDT, a real instant."""
    instant = local_instant(date(2026, 3, 8), time(2, 30), NEW_YORK)

    assert instant == _utc(2026, 3, 8, 7, 30)
    local = instant.astimezone(NEW_YORK)
    assert (local.date(), local.time()) == (date(2026, 3, 8), time(3, 30))
    assert local.utcoffset() == timedelta(hours=-4)


def test_a_send_time_in_the_gap_is_due_after_the_jump() -> None:
    """A plan sending at 02:30 sends at 03:30 local on the spring-forward day in New York."""
    plan = _plan(time(2, 30))
    started = _utc(2026, 3, 7, 17, 0)  # 12:00 EST on 7 March

    assert nominal_due(plan, plan.steps[1], started, NEW_YORK) == _utc(2026, 3, 8, 7, 30)


def test_a_repeated_wall_time_takes_its_first_occurrence() -> None:
    """01:30 on the night New York repeats 01:00-02:00 resolves to the earlier, EDT, instant."""
    assert local_instant(date(2026, 11, 1), time(1, 30), NEW_YORK) == _utc(2026, 11, 1, 5, 30)


def test_due_at_without_a_previous_email_is_the_nominal_time() -> None:
    """With nothing sent yet, a step is due at its nominal morning."""
    started = _utc(2026, 6, 1, 10, 0)

    assert due_at(PLAN, PLAN.steps[4], started, BERLIN, None) == _utc(2026, 6, 5, 5, 0)


def test_a_late_step_pushes_the_next_one_to_the_following_morning() -> None:
    """If day 3 went out late on day 4's date, day 4 waits for the next morning: no burst."""
    started = _utc(2026, 6, 1, 10, 0)
    day3_sent = _utc(2026, 6, 5, 8, 0)  # 10:00 CEST on day 4's date

    due = due_at(PLAN, PLAN.steps[4], started, BERLIN, day3_sent)

    assert due == _utc(2026, 6, 6, 5, 0)


def test_an_email_sent_the_previous_local_evening_does_not_delay_the_next() -> None:
    """The one-a-day rule counts local days: last night's email does not delay this morning's."""
    started = _utc(2026, 6, 1, 19, 0)  # 12:00 PDT on 1 June
    sent = _utc(2026, 6, 5, 6, 30)  # 23:30 PDT on 4 June, already 5 June in UTC

    due = due_at(PLAN, PLAN.steps[4], started, LOS_ANGELES, sent)

    assert due == _utc(2026, 6, 5, 14, 0)  # 07:00 PDT on 5 June


def test_due_at_is_never_earlier_than_nominal() -> None:
    """An old previous email never makes a step due before its own morning."""
    started = _utc(2026, 6, 1, 10, 0)
    welcome_sent = started

    assert due_at(PLAN, PLAN.steps[9], started, BERLIN, welcome_sent) == _utc(2026, 6, 10, 5, 0)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(0, 60), (1, 60), (2, 120), (3, 240), (9, 15_360), (10, 21_600), (40, 21_600)],
)
def test_retry_delay_doubles_up_to_six_hours(attempts: int, expected: int) -> None:
    """Retries back off exponentially from the base delay and never wait more than six hours."""
    assert retry_delay(attempts, 60, 1.0) == timedelta(seconds=expected)


def test_retry_delay_is_scaled_by_jitter() -> None:
    """The jitter factor scales the delay so that retries of many messages spread out."""
    assert retry_delay(3, 60, 0.5) == timedelta(seconds=120)
    assert retry_delay(3, 60, 1.5) == timedelta(seconds=360)


def _expected_wall(target: date, send_time: time, tz: ZoneInfo) -> datetime:
    """The wall clock reading for `send_time` on `target`, moved on by the jump if skipped."""
    wall = datetime.combine(target, send_time, tzinfo=tz)
    before, after = wall.replace(fold=0).utcoffset(), wall.replace(fold=1).utcoffset()
    assert before is not None
    assert after is not None
    # Inside a gap the later offset is larger; inside a repeated hour it is smaller (no shift).
    return datetime.combine(target, send_time) + max(after - before, timedelta(0))


@settings(database=None, deadline=None, max_examples=300)
@given(
    zone_name=st.sampled_from(ZONES),
    send_time=st.sampled_from(SEND_TIMES),
    offset=st.integers(0, TWO_YEARS),
    day=st.integers(1, 60),
)
# Enrolments at noon the day before a spring-forward night whose gap holds the send time.
@example("America/New_York", time(2, 15), _seconds_from_2026(_utc(2026, 3, 7, 17)), 1)
@example("America/Santiago", time(0, 30), _seconds_from_2026(_utc(2026, 9, 5, 16)), 1)
@example("Australia/Lord_Howe", time(2, 15), _seconds_from_2026(_utc(2026, 10, 3, 1, 30)), 1)
def test_nominal_due_is_the_send_time_on_the_nth_local_date(
    zone_name: str, send_time: time, offset: int, day: int
) -> None:
    """Day N lands on the Nth local date after enrolment at the send time, or just after a gap."""
    tz = ZoneInfo(zone_name)
    plan = PLANS[send_time]
    started = FROM_2026 + timedelta(seconds=offset)
    target = started.astimezone(tz).date() + timedelta(days=day)

    due = nominal_due(plan, plan.steps[day], started, tz)

    local = due.astimezone(tz)
    assert local.date() == target
    assert local.replace(tzinfo=None) == _expected_wall(target, send_time, tz)


@settings(database=None, deadline=None, max_examples=300)
@given(
    zone_name=st.sampled_from(ZONES),
    send_time=st.sampled_from(SEND_TIMES),
    offset=st.integers(0, TWO_YEARS),
    day=st.integers(1, 60),
    sent_after=st.integers(0, 70 * 24 * 3600),
)
def test_due_at_is_never_on_the_last_email_local_day(
    zone_name: str, send_time: time, offset: int, day: int, sent_after: int
) -> None:
    """A step is due on a later local date than the previous email and never before its morning."""
    tz = ZoneInfo(zone_name)
    plan = PLANS[send_time]
    started = FROM_2026 + timedelta(seconds=offset)
    last_sent = started + timedelta(seconds=sent_after)

    due = due_at(plan, plan.steps[day], started, tz, last_sent)

    assert due.astimezone(tz).date() > last_sent.astimezone(tz).date()
    assert due >= nominal_due(plan, plan.steps[day], started, tz)
