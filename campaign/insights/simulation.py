"""What a subscriber who signs up at a given instant would receive, and when, without sending."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from campaign.content.compose import Composer, Recipient
from campaign.domain import schedule


@dataclass(frozen=True)
class Delivery:
    day: int
    key: str
    at: datetime
    local: datetime
    subject: str
    preheader: str


def simulate(
    composer: Composer,
    *,
    start: datetime,
    timezone: str,
    days: int | None = None,
    first_name: str = "Ann",
) -> list[Delivery]:
    """Each step's send instant (UTC and local) and rendered subject, DST included."""
    tz = schedule.zone(timezone)
    sample = Recipient(0, "ann@example.com", first_name)
    out: list[Delivery] = []
    for step, at in schedule.timeline(composer.plan, start, tz, days):
        rendered = composer.render(step, sample, at)
        out.append(
            Delivery(
                step.day, step.key, at, at.astimezone(tz), rendered.subject, rendered.preheader
            )
        )
    return out


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
            f"UID:{plan_id}-{item.key}-{stamp}@campaign-engine",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{item.at.strftime('%Y%m%dT%H%M%SZ')}",
            "DURATION:PT15M",
            f"SUMMARY:{_ics_text(f'Day {item.day}: {item.subject}')}",
            f"DESCRIPTION:{_ics_text(item.preheader)}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"
