"""Marketer tools: the preview studio, simulate, numbers per day, click tracking, the report,
and test sends of the whole month."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

from campaign.clock import FixedClock
from campaign.insights import reports
from campaign.insights.report_page import render_report
from campaign.interfaces.studio import create_studio
from campaign.people import subscriptions
from campaign.settings import Settings
from tests.acceptance.conftest import _serve
from tests.conftest import EngineFactory
from tests.helpers import hours, run_campaign, tick
from tests.smtp_server import SMTPServer, free_port
from tests.tools import CHROMIUM, CHROMIUM_ARGS, ROOT, require

START = datetime(2026, 10, 20, 16, 30, tzinfo=UTC)  # Berlin crosses to winter time on day 5


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A copy of the plan, templates and ebook that a test may edit."""
    for folder in ("plans", "templates", "assets"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@pytest.fixture
def studio(content: Path) -> Iterator[str]:
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(content / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(content / "templates" / "emails"),
            "DATABASE_URL": f"sqlite:///{content / 'unused.db'}",
        }
    )
    port = free_port()
    clock = FixedClock(START)
    config = uvicorn.Config(
        create_studio(settings, clock.now),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the server to bind, not for a schedule
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _open(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    page.goto(url)
    return page


def test_the_preview_studio_shows_the_month_and_a_clicked_step(
    studio: str, browser: Browser
) -> None:
    """The timeline lists every step; clicking day 3 shows its subject, phone and desktop views."""
    page = _open(browser, studio)
    assert page.locator("ol.timeline li").count() == 32  # the confirmation email, then 31 steps
    page.locator("a[href='/step/day03']").click()
    page.get_by_role("heading", name="Day 3: When a rounded back becomes the new normal").wait_for()
    assert page.locator("iframe[title='Phone view']").get_attribute("width") == "375"
    assert page.locator("iframe[title='Desktop view']").get_attribute("width") == "800"
    assert "X-Campaign-Step: thirty-day-self-healing/day03" in page.content()
    page.close()


def test_the_preview_studio_reloads_on_an_edit_and_shows_a_broken_one(
    studio: str, content: Path, browser: Browser
) -> None:
    """A subject edit appears without a restart; a broken edit shows its file:line instead."""
    plan = content / "plans" / "thirty_day.yaml"
    page = _open(browser, studio)
    page.get_by_text("When a rounded back becomes the new normal").wait_for()
    time.sleep(0.3)  # let the page's event stream connect before the file changes
    _edit(plan, "When a rounded back becomes the new normal", "Your back, rounded: a new look")
    page.get_by_text("Your back, rounded: a new look").wait_for(timeout=15_000)
    _edit(plan, "template: day03.html", "template: day03-gone.html")
    alert = page.get_by_role("alert")
    alert.wait_for(timeout=15_000)
    line = next(
        n for n, text in enumerate(plan.read_text().splitlines(), 1) if "day03-gone" in text
    )
    assert f"thirty_day.yaml:{line}: steps[3].template:" in alert.inner_text()
    page.close()


def test_simulate_agrees_with_a_real_walk_of_tick(
    env: dict[str, str], smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Each instant and subject `simulate` prints is exactly what `tick --now` then sends."""

    def campaign(*args: str) -> str:
        done = run_campaign(env, tmp_path, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    start = START.isoformat()
    plan = json.loads(
        campaign(
            "simulate",
            "--start",
            start,
            "--timezone",
            "Europe/Berlin",
            "--days",
            "7",
            "--name",
            "Sim",
            "--format",
            "json",
        )
    )
    assert len(plan) == 8
    campaign(
        "subscribe",
        "sim@example.org",
        "--name",
        "Sim",
        "--timezone",
        "Europe/Berlin",
        "--now",
        start,
    )
    for item in plan:
        before = datetime.fromisoformat(item["at"]) - timedelta(minutes=1)
        campaign("tick", "--now", before.isoformat())  # nothing is due a minute early
        campaign("tick", "--now", item["at"])
    sent = [
        (
            str(r.message["X-Campaign-Step"]).split("/")[1],
            parsedate_to_datetime(str(r.message["Date"])),
            str(r.message["Subject"]),
        )
        for r in smtp_server.to("sim@example.org")
    ]
    expected = [(i["step"], datetime.fromisoformat(i["at"]), i["subject"]) for i in plan]
    assert [(k, at) for k, at, _ in sent] == [(k, at) for k, at, _ in expected]
    assert [s for _, _, s in sent] == [s for _, _, s in expected]
    assert plan[5]["local"].endswith("+01:00")
    assert plan[4]["local"].endswith("+02:00")


def test_simulate_writes_a_calendar_file(env: dict[str, str], tmp_path: Path) -> None:
    """`--format ics` is an iCalendar file with one event per email at its instant."""
    import os

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "campaign",
            "simulate",
            "--start",
            START.isoformat(),
            "--timezone",
            "Asia/Kolkata",
            "--format",
            "ics",
        ],
        cwd=tmp_path,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calendar = done.stdout.decode("utf-8")
    assert calendar.startswith("BEGIN:VCALENDAR\r\n")
    assert calendar.count("BEGIN:VEVENT") == 31
    assert "DTSTART:20261021T013000Z" in calendar  # day 1 at 07:00 in Kolkata (+05:30)


def test_stats_count_bounces_and_unsubscribes_that_followed_an_email(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Per step: a 550 counts as bounced, and an unsubscribe within 48 h counts against it."""
    app, clock = engine(START)
    for email in ("gone@example.org", "leaver@example.org", "stayer@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=START
        )
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    for instant in hours(START, 20):
        tick(app, clock, instant)
    subscriptions.unsubscribe(
        app.db, email="leaver@example.org", now=START + timedelta(hours=20)
    )  # day 1 went out at 07:00; 5.5 hours later they leave
    numbers = {row["key"]: row for row in reports.stats(app.db, app.plan)["steps"]}
    assert numbers["welcome"]["bounced"] == 1
    assert numbers["welcome"]["sent"] == 2
    assert numbers["day01"]["sent"] == 2
    assert numbers["day01"]["unsubscribes_48h"] == 1
    assert numbers["welcome"]["unsubscribes_48h"] == 0


def test_a_tracked_link_redirects_to_its_url_and_is_counted(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """With TRACK_CLICKS a link goes through /c/: it redirects only to the original URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, _ = engine(START, PUBLIC_BASE_URL=url, TRACK_CLICKS="true", DOUBLE_OPT_IN="false")
    serving = _serve(app, port)
    next(serving)
    try:
        httpx.post(url + "/subscribe", data={"email": "reader@example.org"})
        app.signup_mail.drain(START)  # the engine sends the welcome, off the request path
        [welcome] = [r.message for r in smtp_server.to("reader@example.org")]
        html = welcome.get_body(preferencelist=("html",))
        assert html is not None
        body = html.get_content()
        assert f'href="{url}/ebook/' not in body  # the ebook link is tracked ...
        assert f'href="{url}/unsubscribe/' in body  # ... the unsubscribe link never is
        # The download button's link (the "view in browser" link above it is tracked too).
        download = re.search(rf'href="{re.escape(url)}/c/([^"]+)"[^>]*>\s*Download', body)
        assert download is not None, body
        tracked = download.group(1)
        response = httpx.get(f"{url}/c/{tracked}", follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == f"{url}/ebook/concepts-of-self-healing.pdf"
        tampered = httpx.get(f"{url}/c/{tracked[:-2]}xx", follow_redirects=False)
        assert tampered.status_code == 400
        assert "location" not in tampered.headers
        numbers = {row["key"]: row for row in reports.stats(app.db, app.plan)["steps"]}
        assert numbers["welcome"]["clicks"] == 1
    finally:
        next(serving, None)


def test_the_report_opens_in_a_browser_with_the_funnel_chart(
    engine: EngineFactory, smtp_server: SMTPServer, browser: Browser, tmp_path: Path
) -> None:
    """The report page draws one funnel bar per step and lists every step in its table."""
    app, clock = engine(START)
    for n in range(3):
        subscriptions.subscribe(
            app.db,
            app.plan,
            email=f"r{n}@example.org",
            first_name=None,
            timezone="UTC",
            now=START,
        )
    for instant in hours(START, 3 * 24):
        tick(app, clock, instant)
    report = tmp_path / "report.html"
    report.write_text(render_report(reports.stats(app.db, app.plan), START))
    page = _open(browser, report.as_uri())
    chart = page.locator("svg#funnel")
    assert chart.is_visible()
    assert chart.locator("rect.bar").count() == 31
    assert chart.locator("rect.bar[data-step='welcome']").get_attribute("height") != "0.0"
    assert chart.locator("rect.bar[data-step='day10']").get_attribute("height") == "0.0"
    assert page.locator("tbody tr").count() == 31
    page.close()


def test_send_test_all_sends_the_whole_month_to_one_inbox(
    env: dict[str, str], smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """`send-test --all --to` delivers all 31 emails, each subject prefixed with its day."""
    import os

    done = subprocess.run(
        [sys.executable, "-m", "campaign", "send-test", "--all", "--to", "review@example.org"],
        cwd=tmp_path,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    subjects = [str(r.message["Subject"]) for r in smtp_server.to("review@example.org")]
    assert len(subjects) == 31
    assert subjects[0].startswith("[TEST day 0] ")
    assert subjects[30].startswith("[TEST day 30] ")
