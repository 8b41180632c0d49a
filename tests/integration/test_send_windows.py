"""Send days and windows on real passes (SQLite and PostgreSQL, a real SMTP server, an injected
clock): nothing at the weekend for a weekday plan, a late step waits for the next morning's
window instead of going at night, and both hold across a clock change."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from campaign.engine import App, make_service
from campaign.insights import plan_page, simulation
from campaign.interfaces.studio import create_studio
from campaign.people import subscriptions
from campaign.settings import Settings
from campaign.storage.models import Delivery, Enrollment
from tests.conftest import ROOT, EngineFactory
from tests.helpers import hours, tick
from tests.smtp_server import Received, SMTPServer

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
STEP_ORDER = ["welcome"] + [f"day{n:02d}" for n in range(1, 31)]
WEEKDAYS = "send_days: [mon, tue, wed, thu, fri]\n"


def _step(received: Received) -> str:
    return str(received.message["X-Campaign-Step"]).split("/", 1)[1]


def _local(received: Received, tz: ZoneInfo) -> datetime:
    return parsedate_to_datetime(str(received.message["Date"])).astimezone(tz)


def _with_plan_keys(plan_file: Path, keys: str) -> Path:
    """The plan copy with plan-level `keys` added before its steps."""
    text = plan_file.read_text()
    plan_file.write_text(text.replace("steps:\n", f"{keys}steps:\n", 1))
    return plan_file


def _subscribe(app: App, email: str, zone: str, now: datetime) -> None:
    subscriptions.subscribe(app.db, app.plan, email=email, first_name="Sam", timezone=zone, now=now)


def test_a_weekday_plan_started_on_friday_sends_nothing_at_the_weekend(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """Welcome on Friday; nothing on Saturday or Sunday; Monday gets day 1 only, Tuesday day 2,
    and so on, each at 07:xx local: the month moves with the weekend."""
    friday = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)  # 12:00 EST
    app, clock = engine(friday, PLAN_PATH=str(_with_plan_keys(plan_file, WEEKDAYS)))
    _subscribe(app, "ann@example.org", "America/New_York", friday)
    for instant in hours(friday, 16 * 24):  # to Sunday 20 December
        tick(app, clock, instant)

    mails = smtp_server.to("ann@example.org")
    sent = [(f"{_local(m, NEW_YORK):%a %d %H}", _step(m)) for m in mails]
    assert sent == [
        ("Fri 04 12", "welcome"),
        ("Mon 07 07", "day01"),
        ("Tue 08 07", "day02"),
        ("Wed 09 07", "day03"),
        ("Thu 10 07", "day04"),
        ("Fri 11 07", "day05"),
        ("Mon 14 07", "day06"),
        ("Tue 15 07", "day07"),
        ("Wed 16 07", "day08"),
        ("Thu 17 07", "day09"),
        ("Fri 18 07", "day10"),
    ]


def test_an_outage_that_ends_at_three_in_the_night_sends_at_the_morning_window(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Passes stop from 06:00 on Wednesday to 03:00 on Thursday (Berlin): the 03:00 pass sends
    nothing and uses no attempt; Wednesday's email goes at 07:00 and Thursday's on Friday."""
    monday = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 CET
    app, clock = engine(monday)
    _subscribe(app, "ann@example.org", "Europe/Berlin", monday)
    outage_from = datetime(2026, 12, 9, 6, 0, tzinfo=BERLIN).astimezone(UTC)
    back_at = datetime(2026, 12, 10, 3, 0, tzinfo=BERLIN).astimezone(UTC)
    for instant in hours(monday, 48):
        if instant < outage_from:
            tick(app, clock, instant)

    at_three = tick(app, clock, back_at)

    assert at_three.sent == 0
    with app.db.transaction() as session:
        waiting = session.scalars(select(Delivery).where(Delivery.step_key == "day02")).all()
        due = session.scalars(select(Enrollment.next_due_at)).one()
    assert [(d.status, d.attempts, d.sent_at) for d in waiting] == [("queued", 0, None)]
    assert due == datetime(2026, 12, 10, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    for instant in hours(back_at + timedelta(hours=1), 4 * 24):
        tick(app, clock, instant)
    sent = [(f"{_local(m, BERLIN):%a %H}", _step(m)) for m in smtp_server.to("ann@example.org")]
    assert sent[:6] == [
        ("Mon 09", "welcome"),
        ("Tue 07", "day01"),
        ("Thu 07", "day02"),
        ("Fri 07", "day03"),
        ("Sat 07", "day04"),
        ("Sun 07", "day05"),
    ]


def test_a_retry_that_falls_after_the_window_waits_for_the_next_morning(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 451 at 18:50 with its retry due after 19:00 goes at 07:00 the next day, not at night,
    and the next step moves a day later."""
    monday = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # 12:00 in London, GMT
    app, clock = engine(monday, RETRY_BASE_SECONDS="1800")
    _subscribe(app, "ann@example.org", "Europe/London", monday)
    tick(app, clock, monday)
    smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
    first = tick(app, clock, datetime(2026, 12, 8, 18, 50, tzinfo=UTC))  # day 1, late
    assert (first.sent, first.retried) == (0, 1)
    for instant in hours(datetime(2026, 12, 8, 19, 0, tzinfo=UTC), 3 * 24):
        tick(app, clock, instant)
    sent = [
        (f"{_local(m, ZoneInfo('Europe/London')):%a %H}", _step(m)) for m in smtp_server.received
    ]
    assert sent == [
        ("Mon 12", "welcome"),
        ("Wed 07", "day01"),
        ("Thu 07", "day02"),
        ("Fri 07", "day03"),
    ]
    with app.db.transaction() as session:
        attempts = session.scalar(select(Delivery.attempts).where(Delivery.step_key == "day01"))
    assert attempts == 2


def test_weekday_mornings_keep_their_local_time_across_the_spring_change(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """Started on the Friday before New York springs forward, a weekday plan with an outage
    from Monday noon to 03:00 EDT on Wednesday sends every weekday at 07:xx local, EST and EDT
    alike, Tuesday's email on Wednesday morning."""
    friday = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)  # 12:00 EST
    app, clock = engine(friday, PLAN_PATH=str(_with_plan_keys(plan_file, WEEKDAYS)))
    _subscribe(app, "ann@example.org", "America/New_York", friday)
    outage = (
        datetime(2026, 3, 9, 12, 0, tzinfo=NEW_YORK).astimezone(UTC),
        datetime(2026, 3, 11, 3, 0, tzinfo=NEW_YORK).astimezone(UTC),
    )
    for instant in hours(friday, 8 * 24):
        if not outage[0] <= instant < outage[1]:
            tick(app, clock, instant)

    mails = smtp_server.to("ann@example.org")
    sent = [(f"{_local(m, NEW_YORK):%a %d %H %Z}", _step(m)) for m in mails]
    assert sent == [
        ("Fri 06 12 EST", "welcome"),
        ("Mon 09 07 EDT", "day01"),
        ("Wed 11 07 EDT", "day02"),
        ("Thu 12 07 EDT", "day03"),
        ("Fri 13 07 EDT", "day04"),
    ]


def test_an_edit_that_adds_send_days_moves_the_next_step_off_the_weekend(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """Saving send_days while the plan runs applies to the steps not yet sent."""
    thursday = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    app, clock = engine(thursday, PLAN_PATH=str(plan_file))
    service = make_service(app)
    _subscribe(app, "ann@example.org", "UTC", thursday)
    service.run_pass(thursday)
    _with_plan_keys(plan_file, WEEKDAYS)
    stamp = plan_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(plan_file, ns=(stamp, stamp))
    for instant in hours(thursday + timedelta(hours=1), 5 * 24):
        clock.set(instant)
        service.run_pass(instant)

    sent = [(f"{_local(m, ZoneInfo('UTC')):%a %H}", _step(m)) for m in smtp_server.received]
    assert sent == [
        ("Thu 12", "welcome"),
        ("Fri 07", "day01"),
        ("Mon 07", "day02"),
        ("Tue 07", "day03"),
    ]


def test_simulate_agrees_instant_by_instant_with_real_passes(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """For a weekday plan over a weekend and New York's spring change, each instant simulate
    gives is when a real pass sends that step: nothing a minute before, that step at it."""
    friday = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)
    app, clock = engine(friday, PLAN_PATH=str(_with_plan_keys(plan_file, WEEKDAYS)))
    planned = simulation.simulate(app.composer, start=friday, timezone="America/New_York", days=8)
    assert [(f"{d.local:%a %d %H:%M}", d.moved_from) for d in planned][:4] == [
        ("Fri 06 12:00", None),
        ("Mon 09 07:00", date(2026, 3, 7)),
        ("Tue 10 07:00", date(2026, 3, 8)),
        ("Wed 11 07:00", date(2026, 3, 9)),
    ]
    _subscribe(app, "ann@example.org", "America/New_York", friday)

    for item in planned:
        assert tick(app, clock, item.at - timedelta(minutes=1)).sent == 0, item
        assert tick(app, clock, item.at).sent == 1, item

    mails = smtp_server.to("ann@example.org")
    assert [(_step(m), _local(m, NEW_YORK)) for m in mails] == [(d.key, d.local) for d in planned]


def test_the_studio_and_the_plan_page_show_weekdays_and_moved_steps(
    engine: EngineFactory, plan_file: Path
) -> None:
    """The studio's month and the console's plan page give each step's time and days, a date
    with its weekday for a signup now, the moved ones marked, and the sending rule."""
    text = plan_file.read_text().replace(
        "  - key: day03\n", '  - key: day03\n    send_time: "18:30"\n', 1
    )
    plan_file.write_text(text)
    friday = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    app, _ = engine(friday, PLAN_PATH=str(_with_plan_keys(plan_file, WEEKDAYS)))
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(plan_file),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
            "DATABASE_URL": app.settings.database_url,
            "PUBLIC_BASE_URL": "https://news.example.org",
        }
    )

    async def visit() -> httpx.Response:
        studio = create_studio(settings, lambda: friday)
        transport = httpx.ASGITransport(app=studio)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return await client.get("/")

    page = asyncio.run(visit()).text
    assert "Daily emails go Mon-Fri at 07:00 local time" in page
    assert "07:00-19:00 window" in page
    assert "Steps with their own: day03: Mon-Fri at 18:30." in page
    assert "07:00 local, Mon-Fri" in page
    assert "Mon 7 Dec (moved from Sat 5 Dec)" in page
    assert "18:30 local, Mon-Fri" in page
    timeline = plan_page.timeline(app.db, app.content, friday, plan_page.NumbersCache(wait=True))
    day01, day03 = timeline.steps[1], timeline.steps[3]
    assert (day01.when, day01.example) == (
        "07:00 local, Mon-Fri",
        "Mon 7 Dec 07:00 (moved from Sat 5 Dec)",
    )
    assert day03.example == "Wed 9 Dec 18:30 (moved from Mon 7 Dec)"
    assert timeline.steps[0].when == "at signup"
    assert timeline.sending_rule.startswith("Daily emails go Mon-Fri at 07:00 local time")
