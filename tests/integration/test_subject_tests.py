"""Subject tests end to end, on SQLite and PostgreSQL with a real SMTP server: each enrollment
gets the variant recorded with its delivery, a retry keeps it, and the numbers split by it."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from campaign.clock import FixedClock
from campaign.content.plan_check import check_plan
from campaign.domain.variants import choose_variant
from campaign.engine import App
from campaign.errors import PlanError
from campaign.insights import delivery_log, reports
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.studio import create_studio
from campaign.people import clicks, directory, operators, subscriptions
from campaign.settings import Settings
from campaign.storage.models import Delivery, Enrollment, Subscriber
from tests.conftest import ROOT, EngineFactory
from tests.helpers import run_campaign, tick
from tests.integration.test_console_pages import OPERATOR, PASSWORD, ConsoleClient, _token
from tests.smtp_server import SMTPServer

START = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)
OWN = "Your free ebook is here: Concepts of Self Healing"
VARIANT = """    variants:
      - subject: "{{ subscriber.name }}, your ebook is waiting"
        preheader: "Open it today: the first lesson comes tomorrow."
"""
PEOPLE = 40


def _test_the_welcome(plan_file: Path) -> None:
    """Give the shipped plan's welcome step a second subject, `b`."""
    text = plan_file.read_text(encoding="utf-8")
    marker = "    template: welcome.html\n    attach: true\n"
    assert marker in text
    plan_file.write_text(text.replace(marker, marker + VARIANT, 1), encoding="utf-8")


def _welcomes(app: App) -> dict[str, tuple[int, str | None, int]]:
    """Per address: the welcome delivery's enrollment, recorded variant and attempts."""
    with app.db.read() as session:
        rows = session.execute(
            select(Subscriber.email, Enrollment.id, Delivery.variant, Delivery.attempts)
            .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
            .join(Delivery, Delivery.enrollment_id == Enrollment.id)
            .where(Delivery.step_key == "welcome")
        )
        return {
            email: (enrollment, variant, attempts) for email, enrollment, variant, attempts in rows
        }


def test_each_subscriber_gets_the_recorded_variant_and_a_retry_keeps_it(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """40 people split between the two subjects by the deterministic choice; each inbox holds
    the subject its delivery recorded; a 451 retried after the plan grew more variants sends
    the subject recorded at the first try, not a new choice."""
    _test_the_welcome(plan_file)
    app, clock = engine(START, PLAN_PATH=str(plan_file))
    for n in range(PEOPLE):
        subscriptions.subscribe(
            app.db,
            app.plan,
            email=f"p{n}@example.org",
            first_name=f"Pat{n}",
            timezone="UTC",
            now=START,
        )
    with app.db.read() as session:
        enrollments = dict(
            session.execute(
                select(Subscriber.email, Enrollment.id).join(
                    Enrollment, Enrollment.subscriber_id == Subscriber.id
                )
            ).all()
        )
    # Someone whom a new choice among five would give another subject than the first try's.
    deferred = next(
        email
        for email, enrollment in sorted(enrollments.items())
        if choose_variant(enrollment, "welcome", ("a", "b"))
        != choose_variant(enrollment, "welcome", ("a", "b", "c", "d", "e"))
    )
    smtp_server.handler.rcpt_replies[deferred] = "451 4.3.0 Try again later"
    first = tick(app, clock, START)
    assert (first.sent, first.retried) == (PEOPLE - 1, 1)
    assert _welcomes(app)[deferred][1:] == (
        choose_variant(enrollments[deferred], "welcome", ("a", "b")),
        1,
    )
    del smtp_server.handler.rcpt_replies[deferred]
    # Three more subjects: a new choice would now pick among five.
    more = "".join(f'      - subject: "Extra subject {n}"\n' for n in range(3))
    plan_file.write_text(plan_file.read_text().replace(VARIANT, VARIANT + more), encoding="utf-8")
    later = START + timedelta(hours=1)
    grown, clock = engine(later, PLAN_PATH=str(plan_file))
    assert grown.plan.steps[0].variant_names == ("a", "b", "c", "d", "e")
    tick(grown, clock, later)

    recorded = _welcomes(grown)
    assert len(recorded) == PEOPLE
    for email, (enrollment, variant, _) in recorded.items():
        assert variant == choose_variant(enrollment, "welcome", ("a", "b")), email
        (received,) = smtp_server.to(email)
        name = email.split("@")[0].replace("p", "Pat")
        wanted = OWN if variant == "a" else f"{name}, your ebook is waiting"
        assert received.message["Subject"] == wanted, email
    assert {variant for _, variant, _ in recorded.values()} == {"a", "b"}
    assert recorded[deferred][2] == 2  # the retried one: sent on its second try, once


def test_stats_count_sends_clicks_and_unsubscribes_per_variant(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path, env: dict[str, str]
) -> None:
    """`stats` shows each variant's sends as recorded, the click and the unsubscribe under
    the variant of the email that came before them, and a verdict with the sample sizes."""
    _test_the_welcome(plan_file)
    app, clock = engine(START, PLAN_PATH=str(plan_file), TRACK_CLICKS="true")
    for n in range(PEOPLE):
        subscriptions.subscribe(
            app.db, app.plan, email=f"p{n}@example.org", first_name=None, timezone="UTC", now=START
        )
    tick(app, clock, START)
    recorded = _welcomes(app)
    by_variant = {
        name: sorted(e for e, (_, v, _) in recorded.items() if v == name) for name in "ab"
    }
    clicker, leaver = by_variant["b"][0], by_variant["a"][0]
    with app.db.read() as session:
        clicked_id = session.scalar(
            select(Delivery.id)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .where(Subscriber.email == clicker)
        )
    assert clicked_id is not None
    later = START + timedelta(hours=2)
    secret = app.settings.secret_key.get_secret_value()
    for url in ("https://example.org/one", "https://example.org/two"):
        token = app.composer.click_url(clicked_id, url, later).rsplit("/", 1)[1]
        clicks.follow(app.db, secret, token, later)
    subscriptions.unsubscribe(app.db, email=leaver, now=later)

    (test,) = reports.stats(app.db, app.plan)["subject_tests"]
    assert (test["step"], test["day"], test["running"]) == ("welcome", 0, True)
    rows = {v["name"]: v for v in test["variants"]}
    assert [rows[name]["sent"] for name in "ab"] == [len(by_variant["a"]), len(by_variant["b"])]
    assert (rows["a"]["clicked"], rows["b"]["clicked"], rows["b"]["clicks"]) == (0, 1, 2)
    assert (rows["a"]["unsubscribes_48h"], rows["b"]["unsubscribes_48h"]) == (1, 0)
    assert rows["a"]["subject"] == OWN
    clicks_verdict = test["comparisons"][0]
    assert (clicks_verdict["measure"], clicks_verdict["control"], clicks_verdict["variant"]) == (
        "click rate",
        "a",
        "b",
    )
    assert not clicks_verdict["enough_data"]
    share = f"{100 / len(by_variant['b']):.1f}% of {len(by_variant['b'])}"
    assert clicks_verdict["statement"].startswith(f"b's click rate ({share}) is higher than a's")

    shown = run_campaign(
        {**env, "PLAN_PATH": str(plan_file), "TRACK_CLICKS": "true"}, plan_file.parent, "stats"
    )
    assert shown.returncode == 0, shown.stderr
    assert "subject test of welcome (day 0, running)" in shown.stdout
    assert "too few to tell yet" in " ".join(shown.stdout.split())
    log = [row for row in delivery_log.page(app.db, 0, 100) if row.email == clicker]
    assert [(row.step_key, row.variant) for row in log] == [("welcome", "b")]
    as_json = run_campaign(
        {**env, "PLAN_PATH": str(plan_file)}, plan_file.parent, "stats", "--json"
    )
    assert json.loads(as_json.stdout)["subject_tests"][0]["variants"][1]["clicked"] == 1


def test_ending_a_test_keeps_the_history_and_sends_the_kept_subject(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """Editing the plan down to one subject ends the test: newcomers get that subject (no
    variant recorded), and the test's numbers stay in `stats`, marked ended."""
    original = plan_file.read_text(encoding="utf-8")
    _test_the_welcome(plan_file)
    app, clock = engine(START, PLAN_PATH=str(plan_file))
    for n in range(6):
        subscriptions.subscribe(
            app.db, app.plan, email=f"p{n}@example.org", first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    plan_file.write_text(original.replace(OWN, "Sam's pick: the ebook is here"), encoding="utf-8")
    later = START + timedelta(hours=1)
    edited, clock = engine(later, PLAN_PATH=str(plan_file))
    subscriptions.subscribe(
        edited.db,
        edited.plan,
        email="late@example.org",
        first_name="Lee",
        timezone="UTC",
        now=later,
    )
    tick(edited, clock, later)

    (received,) = smtp_server.to("late@example.org")
    assert received.message["Subject"] == "Sam's pick: the ebook is here"
    assert _welcomes(edited)["late@example.org"][1] is None
    (test,) = reports.stats(edited.db, edited.plan)["subject_tests"]
    assert test["running"] is False
    assert sum(v["sent"] for v in test["variants"]) == 6


def test_the_console_plan_page_shows_the_test_and_previews_each_variant(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """The Plan page lists the test's variants with their sends and the verdict; a variant's
    link shows the step with that subject, in the page and in the framed email."""
    _test_the_welcome(plan_file)
    app, clock = engine(START, PLAN_PATH=str(plan_file))
    for n in range(4):
        app.subscribe(f"p{n}@example.org", name="Ann", timezone="UTC", now=START)
    tick(app, clock, START)
    operators.add_operator(app.db, OPERATOR, PASSWORD, START)
    client = ConsoleClient(create_admin_app(app))
    login = client.get("/console/login")
    client.post(
        "/console/login",
        data={"email": OPERATOR, "password": PASSWORD, "csrf_token": _token(login.text)},
    )

    page = client.get("/console/plan").text
    assert "Subject test: day 0 (welcome)" in page
    sent = {v: n for _, v, n in _sent_by_variant(app)}
    for name in ("a", "b"):
        row = re.search(rf"<tr><td>{name}</td>.*?</tr>", page, re.S)
        assert row is not None, name
        assert re.findall(r'class="num">([\d,]+)<', row.group(0))[0] == str(sent.get(name, 0))
    assert "too few to tell yet" in page
    shown = client.get("/console/plan/welcome", params={"variant": "b"}).text
    assert "Ann, your ebook is waiting" in shown
    assert 'src="/console/plan/welcome/email.html?variant=b"' in shown
    framed = client.get("/console/plan/welcome/email.html", params={"variant": "b"}).text
    assert "Open it today: the first lesson comes tomorrow." in framed
    own = client.get("/console/plan/welcome", params={"variant": "<x>"}).text
    assert OWN in own  # an unknown variant shows the step's own subject
    email, (_, variant, _) = next(iter(_welcomes(app).items()))
    person = client.get(f"/console/subscribers/{directory.search(app.db, email).rows[0].id}")
    assert f'welcome <span class="hint">(subject {variant})</span>' in person.text


def _sent_by_variant(app: App) -> list[tuple[str, str | None, int]]:
    with app.db.read() as session:
        rows = session.execute(
            select(Delivery.step_key, Delivery.variant, func.count()).group_by(
                Delivery.step_key, Delivery.variant
            )
        )
        return [(key, variant, int(n)) for key, variant, n in rows]


def test_preview_shows_a_chosen_variant_and_refuses_an_unknown_one(
    plan_file: Path, env: dict[str, str]
) -> None:
    """`campaign preview welcome --variant b` renders b's subject; an unknown variant is exit 2
    naming the step's variants."""
    _test_the_welcome(plan_file)
    run_env = {**env, "PLAN_PATH": str(plan_file)}
    shown = run_campaign(
        run_env, plan_file.parent, "preview", "welcome", "--variant", "b", "--format", "eml"
    )
    assert shown.returncode == 0, shown.stderr
    assert "Subject: Ann, your ebook is waiting" in shown.stdout
    refused = run_campaign(run_env, plan_file.parent, "preview", "welcome", "--variant", "z")
    assert refused.returncode == 2
    assert "step welcome has no variant 'z' (its variants: a, b)" in refused.stderr


def test_the_studio_lists_each_variant_and_shows_it(plan_file: Path, tmp_path: Path) -> None:
    """The studio's month shows variant b under its step, and b's page and email carry b's
    subject and preheader."""
    _test_the_welcome(plan_file)
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(plan_file),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "PUBLIC_BASE_URL": "https://news.example.org",
        }
    )
    studio = create_studio(settings, FixedClock(START).now)

    async def visit() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=studio)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return [
                await client.get("/"),
                await client.get("/step/welcome?variant=b"),
                await client.get("/step/welcome/email.html?variant=b"),
            ]

    timeline, page, email = asyncio.run(visit())
    listed = timeline.text.index('href="/step/welcome?variant=b"')
    assert timeline.text.index('href="/step/welcome"') < listed < timeline.text.index("/day01")
    assert "Ann, your ebook is waiting" in timeline.text[listed:]
    assert "<h2>Day 0: Ann, your ebook is waiting</h2>" in page.text
    assert 'src="/step/welcome/email.html?variant=b"' in page.text
    assert "Open it today: the first lesson comes tomorrow." in email.text


def test_a_retry_queued_before_the_test_began_gets_a_variant_and_keeps_it(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """A delivery deferred under a plan with one subject, retried after `variants:` was added,
    records its variant on that claim and arrives with that variant's subject."""
    original = plan_file.read_text(encoding="utf-8")
    app, clock = engine(START, PLAN_PATH=str(plan_file))
    app.subscribe("ann@example.org", name="Ann", timezone="UTC", now=START)
    smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
    assert tick(app, clock, START).retried == 1
    assert _welcomes(app)["ann@example.org"][1] is None
    _test_the_welcome(plan_file)
    assert plan_file.read_text(encoding="utf-8") != original
    later = START + timedelta(hours=1)
    tested, clock = engine(later, PLAN_PATH=str(plan_file))
    assert tick(tested, clock, later).sent == 1

    enrollment, variant, attempts = _welcomes(tested)["ann@example.org"]
    assert (variant, attempts) == (choose_variant(enrollment, "welcome", ("a", "b")), 2)
    (received,) = smtp_server.to("ann@example.org")
    wanted = OWN if variant == "a" else "Ann, your ebook is waiting"
    assert received.message["Subject"] == wanted


def test_plan_check_renders_every_variant_and_names_a_broken_ones_line(
    plan_file: Path, env: dict[str, str]
) -> None:
    """A variant whose subject uses an unknown name is reported at that variant's line and
    field, as the step's own subject would be; a good variant passes."""
    _test_the_welcome(plan_file)
    settings = Settings.from_env({**env, "PLAN_PATH": str(plan_file)})
    assert check_plan(settings).steps[0].variant_names == ("a", "b")
    broken = VARIANT.replace("subscriber.name", "subscriber.nickname")
    text = plan_file.read_text(encoding="utf-8").replace(VARIANT, broken)
    plan_file.write_text(text, encoding="utf-8")
    line = text.splitlines().index(broken.splitlines()[1]) + 1
    with pytest.raises(PlanError) as caught:
        check_plan(settings)
    assert [str(p) for p in caught.value.problems] == [
        f"{plan_file}:{line}: steps[0].variants[0].subject: 'dict object' has no attribute"
        " 'nickname'"
    ]
