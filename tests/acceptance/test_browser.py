"""A person in a real browser: from the signup box to the welcome email, and unsubscribing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.acceptance.conftest import Site
from tests.tools import CHROMIUM, CHROMIUM_ARGS, require


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_a_visitor_signs_up_confirms_and_gets_the_welcome_email(
    site: Site, browser: Browser
) -> None:
    """Type an address, submit, open the emailed link, confirm: the welcome email arrives."""
    page = browser.new_page(timezone_id="America/New_York")
    page.goto(site.url + "/subscribe")
    page.get_by_label("Email address").fill("lena@example.org")
    page.get_by_label("First name").fill("Lena")
    page.get_by_role("button", name="Send me the plan").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    [confirmation] = site.mail_to("lena@example.org")
    page.goto(site.url + site.link_in(confirmation, "confirm"))
    page.get_by_role("button", name="Yes, start my 30-day plan").click()
    page.get_by_role("heading", name="You're in").wait_for()
    welcome = site.mail_to("lena@example.org")[1]
    assert str(welcome["X-Campaign-Step"]).endswith("/welcome")
    assert "Lena" in str(welcome["To"])
    with site.app.db.transaction() as session:
        from campaign.storage import store

        known = store.find_subscriber(session, "lena@example.org")
    assert known is not None
    assert known.timezone == "America/New_York"  # the page's script read the browser's zone
    page.goto(site.url + site.link_in(welcome, "unsubscribe"))
    page.get_by_role("button", name="Unsubscribe me").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert site.status_of("lena@example.org") == "unsubscribed"
    page.close()


def test_a_bad_address_shows_its_message_next_to_the_field(site: Site, browser: Browser) -> None:
    """The browser shows why the address was refused, right under the email field."""
    page = browser.new_page()
    page.goto(site.url + "/subscribe")
    page.get_by_label("Email address").fill("lena@@example.org")
    page.get_by_role("button", name="Send me the plan").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "valid email address" in alert.inner_text()
    assert page.get_by_label("Email address").input_value() == "lena@@example.org"
    page.close()


def test_the_signup_page_says_what_happens_and_promises_only_to_ease_pain(
    site: Site, browser: Browser
) -> None:
    """The box says confirm first, then the ebook at once, and promises to ease aches, not to
    eliminate them; the confirmation email says the same steps."""
    page = browser.new_page()
    page.goto(site.url + "/subscribe")
    text = " ".join(page.locator("main").inner_text().split())
    assert "ease aches & pain" in text
    assert "eliminate" not in text
    assert "instantly" not in text
    assert "we email you a link to confirm your address" in text
    assert "arrives at once" in text
    page.get_by_label("Email address").fill("omar@example.org")
    page.get_by_role("button", name="Send me the plan").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    [confirmation] = site.mail_to("omar@example.org")
    body = confirmation.get_body(preferencelist=("plain",))
    assert body is not None
    said = " ".join(body.get_content().split())
    assert "Confirm your email address with the button below." in said
    assert "arrives at once, in a welcome email" in said
    page.close()
