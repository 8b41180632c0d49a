"""An operator in Chromium on the console's Subscribers, Plan and Import pages: search, a
subscriber's page, unsubscribe, forget with its confirmation, the plan and a step's previews,
an import checked row by row before it is committed, and a webhook endpoint added (its secret
shown once) whose attempts to a real receiver show.

With CONSOLE_SCREENSHOTS=docs/console the walk saves each page's screenshot there (the
README's pictures); otherwise into the test's temporary folder."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from campaign.engine import App
from campaign.interfaces.admin import make_admin_server
from campaign.people import directory, operators
from tests.acceptance.conftest import NOW
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer, free_port
from tests.tools import CHROMIUM, CHROMIUM_ARGS, require
from tests.webhook_receiver import Receiver

OPERATOR, PASSWORD = "op@example.org", "correct horse battery staple"
# The walk is about the pages; the use cases under them run on both databases elsewhere.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Console:
    app: App
    url: str
    shots: Path

    def shoot(self, page: Page, name: str) -> None:
        # A viewport as tall as the page: Chromium's full-page capture leaves frames that
        # start below the first screen blank.
        size = page.viewport_size or {"width": 1200, "height": 800}
        height = int(page.evaluate("document.documentElement.scrollHeight"))
        page.set_viewport_size({"width": size["width"], "height": height})
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        page.set_viewport_size(size)


@pytest.fixture
def console(engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path) -> Iterator[Console]:
    """The operators' listener on loopback over a small list whose welcomes went out."""
    app, clock = engine(NOW, TRACK_CLICKS="true")
    people = [
        ("ann@example.org", "Ann"),
        ("anna.berg@example.org", "Anna"),
        ("bob@example.org", "Bob"),
        ("carla@example.net", "Carla"),
        ("dmitri@example.com", "Dmitri"),
    ]
    for email, name in people:
        app.subscribe(email, name=name, timezone="Europe/Berlin", now=NOW)
    tick(app, clock, NOW)
    operators.add_operator(app.db, OPERATOR, PASSWORD, NOW)
    port = free_port()
    server = make_admin_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for a real server to bind its socket, not for a schedule
    assert server.started
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS", "") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    yield Console(app, f"http://127.0.0.1:{port}/console", shots)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _sign_in(console: Console, browser: Browser, path: str) -> Page:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(console.url + path)
    page.get_by_label("Email address").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_search_a_subscriber_unsubscribe_and_forget_them(
    console: Console, browser: Browser
) -> None:
    """Search 'ann', open Ann, unsubscribe her; open Bob, forget him after typing his address
    (a wrong address first is refused and erases nothing)."""
    page = _sign_in(console, browser, "/subscribers")
    page.get_by_label("Address or name starts with").fill("ANN")
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("link", name="@example.org")
    assert results.all_inner_texts() == ["ann@example.org", "anna.berg@example.org"]
    console.shoot(page, "subscribers")
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    console.shoot(page, "subscribers-375")
    page.set_viewport_size({"width": 1200, "height": 800})

    page.get_by_role("link", name="ann@example.org", exact=True).click()
    page.get_by_role("heading", name="ann@example.org").wait_for()
    assert "250 accepted" in page.inner_text("table.deliveries")
    console.shoot(page, "subscriber")
    page.get_by_role("button", name="Unsubscribe").click()
    assert "Unsubscribed" in page.get_by_role("status").inner_text()
    assert directory.search(console.app.db, "ann@").rows[0].status == "unsubscribed"

    page.goto(console.url + "/subscribers?q=bob")
    page.get_by_role("link", name="bob@example.org").click()
    page.get_by_role("link", name="Forget…").click()
    page.get_by_role("heading", name="Forget bob@example.org?").wait_for()
    console.shoot(page, "forget")
    page.get_by_label("Type the address to confirm").fill("someone@else.org")
    page.get_by_role("button", name="Forget for good").click()
    assert "type the subscriber's address" in page.get_by_role("alert").inner_text()
    assert directory.search(console.app.db, "bob").rows
    page.get_by_label("Type the address to confirm").fill("bob@example.org")
    page.get_by_role("button", name="Forget for good").click()
    assert "Forgotten" in page.get_by_role("status").inner_text()
    assert directory.search(console.app.db, "bob").rows == []
    page.close()


def test_the_plan_and_a_steps_previews(console: Console, browser: Browser) -> None:
    """The timeline counts the five welcomes; a step shows its email at 375 and 800 px."""
    page = _sign_in(console, browser, "/plan")
    first_row = page.locator("table.timeline tbody tr").first
    assert "Day 0" in first_row.inner_text()
    assert first_row.locator("td.num").first.inner_text() == "5"
    console.shoot(page, "plan")
    page.locator("table.timeline tbody tr").nth(3).get_by_role("link").click()
    page.set_viewport_size({"width": 1400, "height": 900})
    for title in ("Phone view", "Desktop view"):
        body = page.frame_locator(f"iframe[title='{title}']").locator("body")
        body.get_by_text("Hi Ann").wait_for()
    assert page.locator("iframe[title='Desktop view']").get_attribute("width") == "800"
    console.shoot(page, "plan-step")
    page.goto(console.url + "/plan/confirmation")
    page.frame_locator("iframe[title='Desktop view']").locator("body").wait_for()
    page.close()


def test_an_import_is_checked_row_by_row_then_committed(
    console: Console, browser: Browser, tmp_path: Path
) -> None:
    """The report lists the new, known and refused rows and stores nothing; Commit adds the
    new ones."""
    upload = tmp_path / "newsletter-list.csv"
    upload.write_text(
        "email,first_name,timezone\n"
        "erik@example.org,Erik,Europe/Oslo\n"
        "ann@example.org,Ann,\n"
        "not an address,X,\n"
        "fatima@example.org,Fatima,Mars/Olympus\n"
        "greta@example.org,Greta,\n",
        encoding="utf-8",
    )
    page = _sign_in(console, browser, "/import")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Check the file").click()
    page.get_by_role("heading", name="Check the import").wait_for()
    assert page.locator("#count-add").inner_text() == "2"
    assert page.locator("#count-refused").inner_text() == "2"
    assert "Mars/Olympus" in page.inner_text("table.rows")
    assert directory.search(console.app.db, "erik").rows == []
    console.shoot(page, "import")
    page.get_by_role("button", name="Commit the import").click()
    page.get_by_role("heading", name="Import committed").wait_for()
    assert page.locator("#added").inner_text() == "2"
    assert [row.email for row in directory.search(console.app.db, "erik").rows] == [
        "erik@example.org"
    ]
    page.close()


def test_a_webhook_endpoint_is_added_and_its_attempts_show(
    console: Console, browser: Browser, tmp_path: Path
) -> None:
    """Add an endpoint with the form (the secret shown once); a receiver that fails once then
    takes the event: the list counts it delivered, the endpoint's page shows both attempts."""
    port = free_port()
    page = _sign_in(console, browser, "/webhooks")
    page.get_by_label("URL").fill(f"http://127.0.0.1:{port}/hooks")
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#secret").inner_text()
    assert secret.startswith("whsec_")
    receiver = Receiver(port, secret, tmp_path / "received.jsonl").start("500,200")
    try:
        app = console.app
        crm = app.webhooks.add(
            "https://crm.example.org/hooks/campaign", ["subscriber.unsubscribed"]
        )
        app.webhooks.disable(crm.id, "CRM migration until Friday")
        app.unsubscribe("carla@example.net", now=NOW)
        app.webhook_deliverer.deliver_due(NOW)
        app.webhook_deliverer.deliver_due(NOW + timedelta(minutes=1))
    finally:
        receiver.stop()
    page.goto(console.url + "/webhooks")
    assert secret not in page.content()
    assert "CRM migration until Friday" in page.inner_text("table")
    console.shoot(page, "webhooks")
    page.get_by_role("link", name=f"http://127.0.0.1:{port}/hooks").click()
    page.get_by_role("heading", name="Recent attempts").wait_for()
    assert "HTTP 500 Internal Server Error" in page.inner_text("table.deliveries")
    console.shoot(page, "webhook-endpoint")
    page.get_by_role("button", name="Disable").click()
    assert "Endpoint disabled" in page.get_by_role("status").inner_text()
    page.close()
