"""Each email's "view in browser" page, over real HTTP, for emails sent over real SMTP: the page
shows that email as its subscriber got it, privately, and no altered, borrowed or stale link
shows anything (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html import unescape

import httpx
import pytest

from campaign.clock import FixedClock
from campaign.engine import App
from campaign.people import directory, subscriptions
from campaign.storage import store
from tests.acceptance.conftest import _serve
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer, free_port

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def _html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _view_link(html: str) -> str:
    found = re.search(r'href="([^"]+)"[^>]*>View this email in your browser', html)
    assert found is not None
    return unescape(found.group(1))


@pytest.fixture
def site(
    engine: EngineFactory, smtp_server: SMTPServer
) -> Iterator[tuple[App, httpx.Client, list[EmailMessage]]]:
    """An engine serving its public pages on loopback that has sent Maria days 0 to 11 over
    SMTP, each pass at the moment the test then reads the page (so links are signed alike)."""
    port = free_port()
    app, clock = engine(
        NOW, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", REPLY_TO="Dr Ann <ann@example.org>"
    )
    subscriptions.subscribe(
        app.db, app.plan, email="maria@example.org", first_name="Maria", timezone="UTC", now=NOW
    )
    for day in range(12):
        tick(app, clock, NOW + timedelta(days=day))
    clock.set(NOW + timedelta(days=11))
    messages = [mail.message for mail in smtp_server.to("maria@example.org")]
    serving = _serve(app, port)
    next(serving)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield app, http, messages
    finally:
        next(serving, None)


def test_the_view_in_browser_link_shows_the_email_as_it_was_sent(
    site: tuple[App, httpx.Client, list[EmailMessage]],
) -> None:
    """Day 11's link, opened on the day it was sent, answers the email's own HTML, byte for byte,
    marked private, not to be cached or indexed, with the site's security headers."""
    _, http, messages = site
    assert [str(m["X-Campaign-Step"]).split("/")[1] for m in messages][-1] == "day11"
    sent = _html(messages[-1])
    assert str(messages[-1]["Reply-To"]) == "Dr Ann <ann@example.org>"
    page = http.get(_view_link(sent))
    assert page.status_code == 200
    assert page.text.strip() == sent.replace("\r\n", "\n").strip()  # MIME sends CRLF
    assert "Hi Maria," in page.text
    assert page.headers["cache-control"] == "private, no-store"
    assert "noindex" in page.headers["x-robots-tag"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "script-src" not in page.headers["content-security-policy"]


def test_a_see_day_mention_links_that_days_page_for_the_same_subscriber(
    site: tuple[App, httpx.Client, list[EmailMessage]],
) -> None:
    """Day 11 says "(see day 3)": the link opens day 3's lesson, greeting Maria."""
    _, http, messages = site
    html = _html(messages[-1])
    [link] = re.findall(r'<a href="([^"]+)"[^>]*>see day 3</a>', html)
    page = http.get(unescape(link))
    assert page.status_code == 200
    assert "When a rounded back becomes the new normal" in page.text
    assert "Hi Maria," in page.text
    assert page.headers["cache-control"] == "private, no-store"


def test_a_forged_altered_or_borrowed_link_shows_nothing(
    site: tuple[App, httpx.Client, list[EmailMessage]],
) -> None:
    """A made-up token, one with its signature or its subscriber changed, the one-click
    unsubscribe token of the same email put in its place, and a step the plan does not
    have (or names by day number) all answer 404 and never a lesson."""
    _, http, messages = site
    link = _view_link(_html(messages[-1]))
    _, token, step = link.rsplit("/", 2)
    payload, mac = token.split(".")
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    purpose, subscriber, issued, plan = decoded.split(".")
    someone_else = f"{purpose}.{int(subscriber) + 1}.{issued}.{plan}".encode()
    other_payload = base64.urlsafe_b64encode(someone_else).decode().rstrip("=")
    unsubscribe = str(messages[-1]["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for path in (
        f"/view/not-a-token/{step}",
        f"/view/{payload}.{flipped}/{step}",  # signature changed
        f"/view/{other_payload}.{mac}/{step}",  # another subscriber, same signature
        f"/view/{unsubscribe}/{step}",  # a real token, for another purpose
        f"/view/{token}/day99",
        f"/view/{token}/11",
        f"/view/{token}/confirmation",
    ):
        page = http.get(path)
        assert page.status_code == 404, path
        assert "Hi Maria" not in page.text, path
        assert page.headers["cache-control"] == "private, no-store", path


def test_a_lesson_opens_on_its_day_and_not_before(
    site: tuple[App, httpx.Client, list[EmailMessage]],
) -> None:
    """Maria has had days 0 to 11. Putting day12 or day30 in her link (the key is in plain
    sight) answers 404 without the lesson; once day 12 has gone to her, its page opens."""
    app, http, messages = site
    link = _view_link(_html(messages[-1]))
    base = link.rsplit("/", 1)[0]
    assert http.get(f"{base}/welcome").status_code == 200
    assert http.get(f"{base}/day05").status_code == 200
    for step in ("day12", "day30"):
        page = http.get(f"{base}/{step}")
        assert page.status_code == 404, step
        assert "Hi Maria" not in page.text, step
    clock = app.clock
    assert isinstance(clock, FixedClock)
    assert tick(app, clock, NOW + timedelta(days=12)).sent == 1
    page = http.get(f"{base}/day12")
    assert page.status_code == 200
    assert "Hi Maria," in page.text
    assert http.get(f"{base}/day13").status_code == 404


def test_a_forgotten_subscribers_pages_are_gone(
    site: tuple[App, httpx.Client, list[EmailMessage]],
) -> None:
    """Once Maria is forgotten, the link in her email answers 404 and shows nothing of her."""
    app, http, messages = site
    link = _view_link(_html(messages[-1]))
    assert http.get(link).status_code == 200
    with app.db.read() as session:
        known = store.find_subscriber(session, "maria@example.org")
    assert known is not None
    directory.forget(app.db, known.id, app.clock.now())
    page = http.get(link)
    assert page.status_code == 404
    assert "Maria" not in page.text
    assert "maria@example.org" not in page.text
