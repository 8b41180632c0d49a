"""Several plans in one folder, on SQLite and PostgreSQL, sending to a real SMTP server: each
enrollment gets its own plan's steps, a signup names its plan, and the daily cap across plans
keeps a person in two plans at one lesson a local day."""

from __future__ import annotations

import asyncio
import json
import os
import quopri
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from campaign.domain.plan_catalog import load_catalog
from campaign.errors import ConfigError, PlanError, UnknownPlan
from campaign.insights import simulation
from campaign.insights.person_plans import Join
from campaign.interfaces.admin import create_admin_app
from campaign.people import api_keys, operators, plan_identity, subscriptions
from campaign.people.subscriptions import Visitor
from campaign.storage import store
from tests.conftest import ROOT, EngineFactory
from tests.helpers import hours, tick
from tests.integration.test_console_pages import OPERATOR, PASSWORD, ConsoleClient, _token
from tests.plans_folder import KNEE, THIRTY, plans_folder
from tests.smtp_server import Received, SMTPServer

START = datetime(2026, 10, 20, 0, 0, tzinfo=UTC)


def _steps(mails: list[Received]) -> list[str]:
    return [str(m.message["X-Campaign-Step"]) for m in mails]


def _sent_at(received: Received) -> datetime:
    return parsedate_to_datetime(str(received.message["Date"]))


def test_each_enrollment_gets_its_own_plans_steps(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Someone in the knee plan only gets knee emails, someone in the default plan only its."""
    folder = plans_folder(tmp_path)
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    app.subscribe("knees@example.org", timezone="UTC", plan="knee", now=START)
    app.subscribe("backs@example.org", timezone="UTC", now=START)
    for instant in hours(START, 4 * 24):
        tick(app, clock, instant)
    assert _steps(smtp_server.to("knees@example.org")) == [
        "knee/welcome",
        "knee/day01",
        "knee/day02",
    ]
    backs = _steps(smtp_server.to("backs@example.org"))
    assert backs[:2] == [f"{THIRTY}/welcome", f"{THIRTY}/day01"]
    assert all(step.startswith(f"{THIRTY}/") for step in backs)
    knee = app.stats("knee")
    assert (knee["plan"], [s["sent"] for s in knee["steps"]]) == ("knee", [1, 1, 1])
    assert app.stats()["steps"][0]["sent"] == 1  # the default plan's welcome: one person


def test_an_unknown_plan_id_is_refused_naming_it(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A signup naming a plan no file has is bad input that names the id; nobody is stored."""
    app, _ = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    with pytest.raises(UnknownPlan, match="'ankle'"):
        app.subscribe("who@example.org", plan="ankle", now=START)
    with pytest.raises(UnknownPlan):
        app.subscribe("who@example.org", plan="x" * 5000, now=START)
    assert sum(app.stats()["subscribers"].values()) == 0


def test_an_active_subscriber_joins_a_second_plan_and_gets_its_welcome_at_once(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Confirmed in plan A, a signup for plan B starts B at once (no second confirmation);
    signing up for B again starts nothing."""
    app, clock = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    app.signups.signup(
        email="ann@example.org", first_name="Ann", timezone="UTC", visitor=Visitor(), now=START
    )
    app.signup_mail.drain(START)
    [confirmation] = smtp_server.to("ann@example.org")
    text = quopri.decodestring(confirmation.data).decode()
    token = re.search(r"/confirm/([A-Za-z0-9_.=-]+)", text).group(1)  # type: ignore[union-attr]
    app.signups.confirm(token, Visitor(), START)
    tick(app, clock, START + timedelta(minutes=1))

    later = START + timedelta(minutes=5)
    joined = app.signups.signup(
        email="ann@example.org",
        first_name="Ann",
        timezone="UTC",
        visitor=Visitor(),
        now=later,
        plan_id="knee",
    )
    again = app.signups.signup(
        email="ann@example.org",
        first_name="Ann",
        timezone="UTC",
        visitor=Visitor(),
        now=later,
        plan_id="knee",
    )
    tick(app, clock, later + timedelta(minutes=1))
    assert (joined.outcome, again.outcome) == ("enrolled", "already-active")
    assert str(smtp_server.to("ann@example.org")[0].message["Subject"]).startswith("Please confirm")
    assert _steps(smtp_server.to("ann@example.org"))[1:] == [
        f"{THIRTY}/welcome",
        "knee/welcome",
    ]


def test_a_confirmation_link_starts_the_plan_its_signup_named(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Double opt-in for the knee plan: the click starts the knee plan, not the default."""
    app, clock = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    app.signups.signup(
        email="bo@example.org",
        first_name="Bo",
        timezone="UTC",
        visitor=Visitor(),
        now=START,
        plan_id="knee",
    )
    app.signup_mail.drain(START)
    [confirmation] = smtp_server.to("bo@example.org")
    # The knee plan has no confirmation email of its own: the default plan's goes.
    assert confirmation.message["Subject"] == app.plan.confirmation.subject  # type: ignore[union-attr]
    text = quopri.decodestring(confirmation.data).decode()
    token = re.search(r"/confirm/([A-Za-z0-9_.=-]+)", text).group(1)  # type: ignore[union-attr]
    app.signups.confirm(token, Visitor(), START)
    tick(app, clock, START + timedelta(minutes=1))
    assert _steps(smtp_server.to("bo@example.org"))[1:] == ["knee/welcome"]


def test_the_daily_cap_holds_the_later_enrollment_to_the_next_local_day(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """In two daily plans at once, a person gets one lesson a local day: the plan they joined
    first goes on, the other waits its turn; both welcomes went at once."""
    app, clock = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    zone = ZoneInfo("Europe/Berlin")
    app.subscribe("two@example.org", timezone="Europe/Berlin", now=START)
    app.subscribe("two@example.org", timezone="Europe/Berlin", plan="knee", now=START)
    for instant in hours(START, 6 * 24):
        tick(app, clock, instant)
    mails = smtp_server.to("two@example.org")
    lessons = [m for m in mails if not str(m.message["X-Campaign-Step"]).endswith("/welcome")]
    days = [_sent_at(m).astimezone(zone).date() for m in lessons]
    assert len(days) == len(set(days)), _steps(lessons)  # never two lessons on one local day
    assert _steps(mails)[:2] == [f"{THIRTY}/welcome", "knee/welcome"]
    # the thirty-day plan started first: its lessons go daily; the knee lessons wait.
    assert _steps(lessons)[:5] == [f"{THIRTY}/day{n:02d}" for n in range(1, 6)]


def test_lessons_the_cap_holds_back_are_not_skipped_as_late(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Under `catch_up: {skip_after: 6}`, a lesson the daily cap moves to a later day is
    postponed on purpose, not late: it goes on its new day, and the lessons after it follow
    one a day. Only the engine's own lateness (an outage) skips a lesson."""
    catch_up = "catch_up:\n  skip_after: 6\nsteps:\n"
    folder = plans_folder(tmp_path)
    thirty = folder / "thirty_day.yaml"
    thirty.write_text(thirty.read_text().replace("steps:\n", catch_up, 1))
    knee = folder / "knee.yaml"
    text = knee.read_text().replace("steps:\n", catch_up, 1)
    knee.write_text(text.replace('send_time: "09:00"', 'send_time: "06:00"'))  # before 07:00
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    app.subscribe("cap@example.org", timezone="UTC", plan="knee", now=START)
    app.subscribe("cap@example.org", timezone="UTC", now=START)
    for instant in hours(START, 7 * 24):
        tick(app, clock, instant)
    mails = smtp_server.to("cap@example.org")
    lessons = [m for m in mails if not str(m.message["X-Campaign-Step"]).endswith("/welcome")]
    assert [
        (_sent_at(m).date(), step) for m, step in zip(lessons, _steps(lessons), strict=True)
    ] == [
        (date(2026, 10, 21), "knee/day01"),
        (date(2026, 10, 22), "knee/day02"),
        (date(2026, 10, 23), f"{THIRTY}/day01"),  # held twice by the cap, then sent
        (date(2026, 10, 24), f"{THIRTY}/day02"),
        (date(2026, 10, 25), f"{THIRTY}/day03"),
        (date(2026, 10, 26), f"{THIRTY}/day04"),
    ]
    assert all(step["skipped"] == 0 for step in app.stats()["steps"])


def test_a_retry_of_a_lesson_the_cap_held_counts_from_its_new_day(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Under `catch_up: {skip_after: 6}`, a lesson the cap held two days that meets a busy
    relay on its new day is retried that morning, not skipped as two days late: its retry
    counts from the day the cap moved it to, as its first try did."""
    catch_up = "catch_up:\n  skip_after: 6\nsteps:\n"
    folder = plans_folder(tmp_path)
    for name in ("thirty_day.yaml", "knee.yaml"):
        plan = folder / name
        plan.write_text(plan.read_text().replace("steps:\n", catch_up, 1))
    knee = folder / "knee.yaml"
    knee.write_text(knee.read_text().replace('send_time: "09:00"', 'send_time: "06:00"'))
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    app.subscribe("busy@example.org", timezone="UTC", plan="knee", now=START)
    app.subscribe("busy@example.org", timezone="UTC", now=START)
    held_day = datetime(2026, 10, 23, tzinfo=UTC)
    for instant in hours(START, 5 * 24):
        if instant == held_day + timedelta(hours=7):  # thirty/day01's new day and hour
            smtp_server.handler.data_replies.append("450 4.2.1 mailbox busy, try later")
        tick(app, clock, instant)
    lessons = [
        (_sent_at(m), step)
        for m, step in zip(
            smtp_server.to("busy@example.org"),
            _steps(smtp_server.to("busy@example.org")),
            strict=True,
        )
        if not step.endswith("/welcome")
    ]
    day01 = [sent for sent, step in lessons if step == f"{THIRTY}/day01"]
    assert len(day01) == 1, lessons  # retried, once
    assert held_day + timedelta(hours=7) < day01[0] < held_day + timedelta(hours=13)
    assert [(sent.date(), step) for sent, step in lessons] == [
        (date(2026, 10, 21), "knee/day01"),
        (date(2026, 10, 22), "knee/day02"),
        (date(2026, 10, 23), f"{THIRTY}/day01"),  # held twice, then retried that morning
        (date(2026, 10, 24), f"{THIRTY}/day02"),  # the next follows a day later
    ]
    assert all(step["skipped"] == 0 for step in app.stats()["steps"])


def test_max_per_day_two_lets_both_plans_send_on_one_day(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """MAX_PER_DAY=2: the two plans' first lessons both go on local day one."""
    folder = plans_folder(tmp_path)
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY, MAX_PER_DAY="2")
    app.subscribe("two@example.org", timezone="UTC", now=START)
    app.subscribe("two@example.org", timezone="UTC", plan="knee", now=START)
    for instant in hours(START, 2 * 24):
        tick(app, clock, instant)
    assert sorted(_steps(smtp_server.to("two@example.org"))) == sorted(
        [f"{THIRTY}/welcome", "knee/welcome", f"{THIRTY}/day01", "knee/day01"]
    )


def test_two_engines_claiming_at_once_keep_the_cap(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Two schedulers on one database pass at the same instants, at once, over people in two
    plans: still one lesson a local day each (the database, not luck, decides)."""
    folder = plans_folder(tmp_path)
    first, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    second, other_clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    people = [f"p{n}@example.org" for n in range(20)]
    for email in people:
        first.subscribe(email, timezone="UTC", now=START)
        first.subscribe(email, timezone="UTC", plan="knee", now=START)
    with ThreadPoolExecutor(2) as pool:
        for instant in hours(START, 3 * 24):
            clock.set(instant)
            other_clock.set(instant)
            passes = [pool.submit(app.dispatcher.run_pass, instant) for app in (first, second)]
            for done in passes:
                done.result()
    for email in people:
        lessons = [
            m
            for m in smtp_server.to(email)
            if not str(m.message["X-Campaign-Step"]).endswith("/welcome")
        ]
        days = [_sent_at(m).date() for m in lessons]
        assert len(days) == len(set(days)) == 2, (email, _steps(lessons))


def test_duplicate_plan_ids_name_both_files(tmp_path: Path) -> None:
    """Two files with one id: a plan error at the second file's id line naming the first."""
    folder = plans_folder(tmp_path, zz_again=KNEE)
    with pytest.raises(PlanError) as caught:
        load_catalog(folder, ROOT / "templates" / "emails", default_plan=THIRTY)
    [problem] = caught.value.problems
    assert f"{folder / 'knee.yaml'}" in str(problem)
    assert str(problem).startswith(f"{folder / 'zz_again.yaml'}:1: id:")


def test_a_folder_of_several_plans_needs_default_plan(tmp_path: Path) -> None:
    """Several plans and no DEFAULT_PLAN: a config error naming the variable and the ids."""
    folder = plans_folder(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_catalog(folder, ROOT / "templates" / "emails")
    assert caught.value.variable == "DEFAULT_PLAN"
    assert "knee" in caught.value.message
    assert caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="'nope'"):
        load_catalog(folder, ROOT / "templates" / "emails", default_plan="nope")


def test_orphans_are_enrollments_no_plan_of_the_folder_has(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """Enrollments in the knee plan are no orphans when the folder has it; they are when not."""
    app, _ = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    app.subscribe("k@example.org", plan="knee", now=START)
    assert plan_identity.orphans(app.db, app.catalog) == {}
    assert plan_identity.orphans(app.db, app.plan) == {"knee": 1}


def test_an_import_row_names_its_plan_and_a_bad_one_is_refused(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """The CSV `plan` column enrols each row in its plan; an unknown id skips only its row."""
    app, _ = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    rows = [
        (2, {"email": "a@example.org", "plan": "knee"}),
        (3, {"email": "b@example.org", "plan": ""}),
        (4, {"email": "c@example.org", "plan": "<script>ankle"}),
    ]
    report = subscriptions.import_rows(
        app.db, app.plan, rows, now=START, plan_ids=list(app.catalog.plans)
    )
    assert (report.added, [p.line for p in report.problems]) == (2, [4])
    assert "no plan has id '<script>ankle'" in report.problems[0].problem
    with app.db.read() as session:
        assert store.active_enrollments_by_plan(session) == {"knee": 1, THIRTY: 1}


SHORT = """\
id: short
name: "Two days"
send_time: "07:00"
then: knee
ebook:
  title: "Short"
  file: ../assets/concepts-of-self-healing.pdf
steps:
  - key: welcome
    day: 0
    subject: "Welcome to the short plan"
    template: welcome.html
  - key: day01
    day: 1
    subject: "Short, lesson one"
    template: day01.html
"""


def test_a_graduate_is_chained_into_the_next_plan_without_a_second_welcome(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """`then: knee`: after the last step the graduate gets the knee plan's lessons, never its
    welcome, and is chained once; signing up for knee again later starts nothing."""
    folder = plans_folder(tmp_path, short=SHORT)
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN="short", DOUBLE_OPT_IN="false")
    app.subscribe("grad@example.org", timezone="UTC", now=START)
    for instant in hours(START, 6 * 24):
        tick(app, clock, instant)
    assert _steps(smtp_server.to("grad@example.org")) == [
        "short/welcome",
        "short/day01",
        "knee/day01",
        "knee/day02",
    ]
    days = [_sent_at(m).date() for m in smtp_server.to("grad@example.org")[1:]]
    assert len(days) == len(set(days))
    with app.db.read() as session:
        assert store.count_enrollments(session, "knee") == 1
    again = app.subscribe("grad@example.org", plan="knee", now=START + timedelta(days=6))
    assert not again.joined


def test_a_plan_file_chains_into_a_plan_beside_it(tmp_path: Path) -> None:
    """PLAN_PATH naming a file whose `then:` names a plan of its folder loads that plan too;
    the file's plan stays the default and the plans do not run side by side."""
    folder = plans_folder(tmp_path, short=SHORT)
    catalog = load_catalog(folder / "short.yaml", ROOT / "templates" / "emails")
    assert (list(catalog.plans), catalog.default_id) == (["short", "knee"], "short")
    assert not catalog.side_by_side


def test_a_plan_removed_from_the_folder_is_refused_while_someone_runs_it(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """Deleting the knee plan's file while someone runs it keeps the last good plans (their
    enrollment would be orphaned); once nobody runs it, the folder without it loads."""
    folder = plans_folder(tmp_path)
    app, _ = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    app.subscribe("k@example.org", plan="knee", now=START)
    (folder / "knee.yaml").unlink()
    assert not app.reload_plan_if_changed()
    assert "'knee' is gone" in (app.plan_edit_refused or "")
    assert "knee" in app.catalog.plans
    app.unsubscribe("k@example.org", now=START)
    (folder / "thirty_day.yaml").touch()  # a later save
    assert app.reload_plan_if_changed()
    assert "knee" not in app.catalog.plans


def test_a_graduate_who_left_the_next_plan_is_not_chained_back_into_it(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Someone who joined the knee plan and left it by its footer link, while still in the
    short plan, hears nothing more of knee when short ends with `then: knee`."""
    folder = plans_folder(tmp_path, short=SHORT)
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN="short", DOUBLE_OPT_IN="false")
    app.subscribe("grad@example.org", timezone="UTC", now=START)
    app.subscribe("grad@example.org", plan="knee", now=START)
    tick(app, clock, START)  # both welcomes
    with app.db.read() as session:
        known = store.find_subscriber(session, "grad@example.org")
    assert known is not None
    assert subscriptions.leave_plan(app.db, known.id, "knee", START + timedelta(minutes=5))
    for instant in hours(START, 6 * 24):
        tick(app, clock, instant)
    assert _steps(smtp_server.to("grad@example.org")) == [
        "short/welcome",
        "knee/welcome",
        "short/day01",
    ]
    with app.db.read() as session:
        assert store.active_enrollments_by_plan(session) == {}


KNEE_WEEKDAYS = KNEE.replace(
    'send_time: "09:00"\n', 'send_time: "09:00"\nsend_days: [mon, tue, wed, thu, fri]\n'
)
SHORT_THEN_WEEKLY = SHORT.replace("then: knee", "then: weekly") + (
    '  - key: day02\n    day: 2\n    subject: "Short, lesson two"\n    template: day02.html\n'
    '  - key: day03\n    day: 3\n    subject: "Short, lesson three"\n    template: day03.html\n'
)


def test_simulate_agrees_instant_by_instant_with_passes_for_a_person_in_two_plans(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A New Yorker joins the weekday knee plan on a Friday and a daily plan (then: weekly)
    on the Saturday before the spring change: every instant `simulate` gives is when hourly
    passes send that email, the cap holding knee back while the daily plan runs."""
    folder = plans_folder(tmp_path, knee=KNEE_WEEKDAYS, short=SHORT_THEN_WEEKLY)
    friday = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)  # 12:00 in New York; DST starts Sunday
    saturday = friday + timedelta(days=1, hours=3)
    app, clock = engine(friday, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY, DOUBLE_OPT_IN="false")
    joins = [Join("knee", friday), Join("short", saturday)]
    until = friday + timedelta(days=20)
    planned = simulation.simulate_person(
        app.contents, joins, timezone="America/New_York", max_per_day=1, until=until
    )
    shown = [
        (d.plan_id, d.key, f"{d.local:%a %d %H:%M %Z}", d.moved_from, d.capped) for d in planned
    ]
    assert shown == [
        ("knee", "welcome", "Fri 06 12:00 EST", None, False),
        ("short", "welcome", "Sat 07 15:00 EST", None, False),
        ("short", "day01", "Sun 08 07:00 EDT", None, False),
        ("short", "day02", "Mon 09 07:00 EDT", None, False),
        ("short", "day03", "Tue 10 07:00 EDT", None, False),
        ("knee", "day01", "Wed 11 09:00 EDT", date(2026, 3, 7), True),
        ("knee", "day02", "Thu 12 09:00 EDT", date(2026, 3, 8), False),
        ("weekly", "week01", "Tue 17 07:00 EDT", None, False),
        ("weekly", "week02", "Tue 24 07:00 EDT", None, False),
    ]
    for instant in hours(friday, 20 * 24 + 1):
        for join in joins:
            if join.at == instant:
                app.subscribe(
                    "ann@example.org", timezone="America/New_York", plan=join.plan_id, now=instant
                )
        tick(app, clock, instant)

    mails = smtp_server.to("ann@example.org")
    assert [(str(m.message["X-Campaign-Step"]), _sent_at(m)) for m in mails] == [
        (f"{d.plan_id}/{d.key}", d.at) for d in planned
    ]


KNEE_CONFIRMED = KNEE.replace(
    "steps:\n",
    'confirmation:\n  subject: "Confirm, and your knee plan starts"\n'
    "  template: confirm.html\nsteps:\n",
    1,
)


def test_a_signup_for_a_plan_with_its_own_confirmation_gets_that_one(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """The confirmation email is the one of the plan the signup named (it promises that plan),
    while a signup naming no plan gets the default plan's."""
    folder = plans_folder(tmp_path, knee=KNEE_CONFIRMED)
    app, _ = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    for email, plan_id in (("knee@example.org", "knee"), ("back@example.org", None)):
        app.signups.signup(
            email=email,
            first_name=None,
            timezone="UTC",
            visitor=Visitor(),
            now=START,
            plan_id=plan_id,
        )
    app.signup_mail.drain(START)
    [knee] = smtp_server.to("knee@example.org")
    [back] = smtp_server.to("back@example.org")
    assert knee.message["Subject"] == "Confirm, and your knee plan starts"
    assert back.message["Subject"] == app.plan.confirmation.subject  # type: ignore[union-attr]


def test_resending_the_welcome_resends_the_welcome_of_the_plan_joined_last(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Someone who joined only the knee plan gets the knee welcome again, not the default
    plan's; after joining the default plan too, that later welcome is the one resent."""
    app, clock = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    app.subscribe("kim@example.org", timezone="UTC", plan="knee", now=START)
    tick(app, clock, START)
    with app.db.read() as session:
        kim = store.find_subscriber(session, "kim@example.org")
    assert kim is not None
    resent = app.resend_welcome(kim.id, now=START + timedelta(minutes=5))
    assert resent.status == "sent", resent.error
    subjects = [str(m.message["Subject"]) for m in smtp_server.to("kim@example.org")]
    assert subjects == ["Your knee plan starts today"] * 2

    later = START + timedelta(hours=2)
    app.subscribe("kim@example.org", plan=THIRTY, now=later)
    tick(app, clock, later)
    app.resend_welcome(kim.id, now=later + timedelta(minutes=5))
    last_two = smtp_server.to("kim@example.org")[-2:]
    assert last_two[0].message["Subject"] == last_two[1].message["Subject"]
    assert str(last_two[1].message["Subject"]) != "Your knee plan starts today"


KNEE_WITH_SIDE = KNEE.replace(
    "steps:\n", "fields:\n  side: {type: choice, choices: [left, right, both]}\nsteps:\n", 1
)


def test_the_api_sets_a_field_only_another_plan_declares(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """PATCH accepts a field the knee plan declares (the default plan does not) and still
    refuses a bad value of it and a name no plan declares, each a 422 naming fields.NAME."""
    folder = plans_folder(tmp_path, knee=KNEE_WITH_SIDE)
    app, _ = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN=THIRTY)
    app.subscribe("kai@example.org", timezone="UTC", plan="knee", now=START)
    admin = create_admin_app(app)
    auth = {"authorization": f"Bearer {api_keys.create(app.db, 'crm', START).token}"}

    def patch(fields: dict[str, object]) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=admin)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.patch(
                    "/api/v1/subscribers/kai@example.org", json={"fields": fields}, headers=auth
                )

        return asyncio.run(send())

    changed = patch({"side": "left"})
    assert changed.status_code == 200, changed.text
    with app.db.read() as session:
        kai = store.find_subscriber(session, "kai@example.org")
    assert kai is not None
    assert json.loads(kai.fields) == {"side": "left"}
    for fields, where in (({"side": "middle"}, "fields.side"), ({"shoe": 42}, "fields.shoe")):
        refused = patch(fields)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == where


def test_an_edit_that_removes_the_last_steps_still_chains_the_graduates(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Short's day 1 removed while it is the next step due: the person graduates at the next
    pass and `then: knee` chains them, as the record of a last step would."""
    folder = plans_folder(tmp_path, short=SHORT)
    app, clock = engine(START, PLAN_PATH=str(folder), DEFAULT_PLAN="short", DOUBLE_OPT_IN="false")
    app.subscribe("edit@example.org", timezone="UTC", now=START)
    app.run_pass(START)  # the welcome
    short = folder / "short.yaml"
    short.write_text(SHORT.split("  - key: day01")[0])
    stamp = short.stat().st_mtime_ns + 1_000_000_000
    os.utime(short, ns=(stamp, stamp))
    for instant in hours(START + timedelta(hours=1), 4 * 24):
        clock.set(instant)
        app.run_pass(instant)
    assert _steps(smtp_server.to("edit@example.org")) == [
        "short/welcome",
        "knee/day01",
        "knee/day02",
    ]


def test_the_console_plan_page_shows_each_plan_with_its_numbers(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """The Plan page links every plan of the folder; `?plan=knee` counts and previews the
    knee plan (its links keep the plan); an unknown plan is a 404 naming it."""
    app, clock = engine(START, PLAN_PATH=str(plans_folder(tmp_path)), DEFAULT_PLAN=THIRTY)
    app.subscribe("kim@example.org", timezone="UTC", plan="knee", now=START)
    tick(app, clock, START)
    operators.add_operator(app.db, OPERATOR, PASSWORD, START)
    client = ConsoleClient(create_admin_app(app))
    login = client.get("/console/login")
    client.post(
        "/console/login",
        data={"email": OPERATOR, "password": PASSWORD, "csrf_token": _token(login.text)},
    )
    default = client.get("/console/plan").text
    assert 'href="/console/plan?plan=knee"' in default
    assert "Knees, lesson one" not in default
    knee = client.get("/console/plan?plan=knee")
    assert knee.status_code == 200
    assert 'aria-current="page">Five days for your knees (knee)' in knee.text
    row = re.search(r'href="/console/plan/welcome\?plan=knee">.*?</tr>', knee.text, re.S)
    assert row is not None
    assert '<td class="num">1</td>' in row.group(0)  # kim's knee welcome
    step = client.get("/console/plan/day01?plan=knee")
    assert "Knees, lesson one" in step.text
    assert 'src="/console/plan/day01/email.html?plan=knee"' in step.text
    assert client.get("/console/plan/day01/email.html?plan=knee").status_code == 200
    unknown = client.get("/console/plan?plan=ankle")
    assert unknown.status_code == 404
    assert "no plan has id" in unknown.text
