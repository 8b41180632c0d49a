"""What a subscriber who signs up at a given instant would receive, and when, without sending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from campaign.content.compose import Composer, Recipient
from campaign.content.snapshot import Contents
from campaign.domain import schedule
from campaign.domain.plan import Plan, Step
from campaign.domain.weekdays import EVERY_DAY, describe
from campaign.insights.person_plans import Join, person_timeline


@dataclass(frozen=True)
class Delivery:
    day: int
    key: str
    at: datetime
    local: datetime
    subject: str
    preheader: str
    #: the local date the step's day falls on when send_days moved it later (None: not moved).
    moved_from: date | None = None
    #: with several plans (`simulate_person`): the step's plan, whether the daily cap held it
    #: back, and whether the person was chained into that plan by `then:`.
    plan_id: str = ""
    capped: bool = False
    chained: bool = False


@dataclass(frozen=True)
class Dated:
    """When one step goes for a given signup, if every pass runs on time."""

    step: Step
    at: datetime
    local: datetime
    #: the local date the step's own day falls on, when send_days moved it later.
    moved_from: date | None


def dates(plan: Plan, start: datetime, tz: ZoneInfo, days: int | None = None) -> list[Dated]:
    """Each step's send instant for a signup at `start` in `tz`, marked when moved."""
    enrolled_on = schedule.local_date(start, tz)
    out: list[Dated] = []
    for step, at in schedule.timeline(plan, start, tz, days):
        local = at.astimezone(tz)
        own_day = enrolled_on + timedelta(days=step.day)
        out.append(Dated(step, at, local, own_day if local.date() != own_day else None))
    return out


def simulate(
    composer: Composer,
    *,
    start: datetime,
    timezone: str,
    days: int | None = None,
    first_name: str = "Ann",
) -> list[Delivery]:
    """Each step's send instant (UTC and local) and rendered subject, DST and send days
    included: a step that send_days moved off its own day says from which date."""
    tz = schedule.zone(timezone)
    sample = Recipient(0, "ann@example.com", first_name)
    out: list[Delivery] = []
    for item in dates(composer.plan, start, tz, days):
        step = item.step
        rendered = composer.render(step, sample, item.at)
        out.append(
            Delivery(
                step.day,
                step.key,
                item.at,
                item.local,
                rendered.subject,
                rendered.preheader,
                item.moved_from,
            )
        )
    return out


def simulate_person(
    contents: Contents,
    joins: Sequence[Join],
    *,
    timezone: str,
    max_per_day: int | None,
    until: datetime | None = None,
    first_name: str = "Ann",
) -> list[Delivery]:
    """Every email one person gets from plans joined at the given instants, with the daily
    cap across plans and `then:` chaining (campaign.insights.person_plans), subjects rendered
    by each plan's own templates."""
    plans = {content.plan.id: content.plan for content in contents}
    composers = {content.plan.id: content.composer for content in contents}
    sample = Recipient(0, "ann@example.com", first_name)
    out: list[Delivery] = []
    for email in person_timeline(plans, joins, timezone, max_per_day=max_per_day or 0, until=until):
        rendered = composers[email.plan_id].render(email.step, sample, email.at)
        out.append(
            Delivery(
                email.step.day,
                email.step.key,
                email.at,
                email.local,
                rendered.subject,
                rendered.preheader,
                email.moved_from,
                email.plan_id,
                email.capped,
                email.chained,
            )
        )
    return out


def sending_rule(plan: Plan) -> str:
    """The plan's send days and window in one sentence, each step with its own named."""
    rule = (
        f"Daily emails go {describe(plan.send_days)} at {plan.send_time:%H:%M} local time; "
        f"one found late waits for the next {_window(plan.send_time, plan.send_window)} window "
        "on a sending day (the welcome goes at once)."
    )
    own = [
        f"{step.key}: {describe(plan.send_days_of(step))} at {plan.send_time_of(step):%H:%M}"
        for step in plan.steps
        if step.send_time is not None or step.send_days is not None
    ]
    return rule + (f" Steps with their own: {'; '.join(own)}." if own else "")


def when_local(plan: Plan, step: Step) -> str:
    """When a step goes in each subscriber's zone: `at signup`, `07:00 local, Mon-Fri`."""
    if step.day == 0:
        return "at signup"
    days = plan.send_days_of(step)
    on_days = "" if days == EVERY_DAY else f", {describe(days)}"
    return f"{plan.send_time_of(step):%H:%M} local{on_days}"


def _window(start: time, length: timedelta) -> str:
    end = datetime.combine(date.min, start) + length
    closes = "24:00" if end.date() > date.min else f"{end:%H:%M}"
    return f"{start:%H:%M}-{closes}"


def moved_note(item: Delivery | Dated) -> str:
    """` (moved from Sat 5 Dec)` for a step send_days moved (`, daily cap` when the cap held
    it back); empty otherwise."""
    if item.moved_from is None:
        return ""
    why = ", daily cap" if isinstance(item, Delivery) and item.capped else ""
    return f" (moved from {short_date(item.moved_from)}{why})"


def short_date(day: date) -> str:
    """`Sat 5 Dec`: a date with its weekday, as a calendar shows it."""
    return f"{day:%a} {day.day} {day:%b}"


def _ics_text(value: str) -> str:
    # RFC 5545 section 3.3.11: backslash, semicolon, comma and newline are escaped.
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def to_ics(plan_id: str, deliveries: list[Delivery]) -> str:
    """An iCalendar file with one 15-minute event per email, for a marketer's calendar."""
    stamp = deliveries[0].at.strftime("%Y%m%dT%H%M%SZ") if deliveries else "19700101T000000Z"
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//campaign-engine//simulate//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
    ]
    for item in deliveries:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{item.plan_id or plan_id}-{item.key}-{stamp}@campaign-engine",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{item.at.strftime('%Y%m%dT%H%M%SZ')}",
            "DURATION:PT15M",
            f"SUMMARY:{_ics_text(f'Day {item.day}: {item.subject}')}",
            f"DESCRIPTION:{_ics_text(item.preheader + moved_note(item))}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"
