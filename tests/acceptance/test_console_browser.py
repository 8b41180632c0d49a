"""An operator in a real browser: signing in to the console on the operators' listener, Today,
Suppressions (add, search, clear), the Audit page, and the refusals (a forged POST, an expired
session), with the console served as a reverse proxy under a path prefix would show it.

`CONSOLE_SCREENSHOTS=docs/console` saves each page's screenshot there (docs/console/README.md)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from campaign.clock import FixedClock
from campaign.engine import App
from campaign.interfaces.admin import make_admin_server
from campaign.people import operators, subscriptions, suppression_list
from campaign.storage import store
from tests.conftest import ROOT, EngineFactory
from tests.helpers import tick
from tests.smtp_server import free_port
from tests.tools import CHROMIUM, CHROMIUM_ARGS, require

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
ANN, PASSWORD = "ann@example.org", "correct horse battery staple"
#: The browser walk is HTTP behaviour; its storage runs on both databases in test_console.py.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Served:
    app: App
    clock: FixedClock
    url: str


@pytest.fixture
def served(engine: EngineFactory) -> Iterator[Served]:
    """The operators' listener, really served on loopback, over a day of sending."""
    app, clock = engine(NOW - timedelta(hours=23))
    for hour in range(0, 23, 2):  # a few signups every other hour: the chart has a shape
        at = NOW - timedelta(hours=23 - hour)
        for n in range(1 + hour % 5):
            subscriptions.subscribe(
                app.db,
                app.plan,
                email=f"p{hour}-{n}@example.org",
                first_name="Pat",
                timezone="America/New_York",
                now=at,
            )
        tick(app, clock, at + timedelta(minutes=3))
    clock.set(NOW)
    with app.db.transaction() as session:
        store.beat(session, "mail-1:4242:9f2c1a7e", NOW, NOW, 0.8)
    suppression_list.add(
        app.db, actor="bo@example.org", email="typo@exmaple.org", note="domain misspelt", now=NOW
    )
    subscriptions.forget_person(app.db, "p0-0@example.org", NOW)  # kept as a hash only
    operators.add_operator(app.db, ANN, PASSWORD, NOW)
    port = free_port()
    server = make_admin_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for a real server to bind its socket, not for a schedule
    assert server.started
    yield Served(app, clock, f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _shot(page: Page, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        target = ROOT / folder if not Path(folder).is_absolute() else Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def test_an_operator_walks_the_console_and_its_refusals(served: Served, browser: Browser) -> None:
    """Sign in, read Today, suppress, find and clear an address, see both in the audit log;
    a POST without the form's token is refused (403) and an idle session goes to login."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(served.url + "/console/")
    page.get_by_role("heading", name="Sign in").wait_for()
    _shot(page, "login")
    page.get_by_label("Email address").fill(ANN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Today").wait_for()
    assert page.get_by_role("link", name="Today").get_attribute("aria-current") == "page"
    chart = page.get_by_role("img", name="Emails sent in the last 24 hours")
    assert chart.locator("rect").count() == 48
    _shot(page, "today")
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    _shot(page, "today-375")
    page.set_viewport_size({"width": 1200, "height": 800})

    page.get_by_role("link", name="Suppressions").click()
    page.get_by_role("heading", name="Suppressions", exact=True).wait_for()
    page.get_by_label("Email address").fill("Walk.In@Example.org")
    page.get_by_label("Note").fill("asked at the front desk")
    page.get_by_role("button", name="Suppress").click()
    page.get_by_role("status").wait_for()
    assert "Walk.In@example.org" in page.locator("tbody").inner_text()
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    assert "forgotten" in rows.nth(2).inner_text()
    _shot(page, "suppressions")
    page.get_by_label("Search").fill("walk.in")
    page.get_by_role("button", name="Search").click()
    assert page.locator("tbody tr").count() == 1
    page.get_by_role("button", name="Clear Walk.In@example.org").click()
    assert page.get_by_role("status").inner_text() == "Suppression cleared."
    assert "No suppressions match" in page.locator("tbody").inner_text()

    page.get_by_role("link", name="Audit").click()
    page.get_by_role("heading", name="Audit").wait_for()
    log = page.locator("tbody").inner_text()
    assert "suppression.add" in log
    assert "suppression.clear" in log
    assert "Walk.In@example.org: asked at the front desk" in log
    _shot(page, "audit")

    # A forged POST: the browser's own cookies, no form token.
    forged = context.request.post(
        served.url + "/console/suppressions", form={"email": "forged@example.org"}
    )
    assert forged.status == 403
    assert suppression_list.search(served.app.db, "forged").total == 0

    served.clock.advance(timedelta(minutes=31))  # idle past CONSOLE_IDLE_MINUTES (30)
    page.get_by_role("link", name="Today").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert "/console/login?next=%2Ftoday" in page.url
    context.close()


def test_behind_a_proxy_every_link_carries_its_path_prefix(
    served: Served, browser: Browser
) -> None:
    """A proxy on loopback (FORWARDED_ALLOW_IPS) that sends X-Forwarded-Prefix: /ops gets
    pages whose links, forms and stylesheet are under /ops/console."""
    context = browser.new_context(extra_http_headers={"X-Forwarded-Prefix": "/ops"})
    page = context.new_page()
    page.goto(served.url + "/console/login")
    assert page.locator("form").get_attribute("action") == "/ops/console/login"
    assert page.locator("link[rel=stylesheet]").get_attribute("href") == (
        "/ops/console/static/console.css"
    )
    context.close()
