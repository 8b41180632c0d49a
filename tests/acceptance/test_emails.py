"""The 31 shipped emails as subscribers and mailbox providers see them: spam score, phone
layout, accessibility, links, and the welcome email's ebook."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from campaign.clock import FixedClock
from campaign.content.compose import Composed, Recipient
from campaign.engine import App, build
from campaign.settings import Settings
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer
from tests.tools import AXE, CHROMIUM, CHROMIUM_ARGS, ROOT, require

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
BASE_URL = "https://news.example.org"
POSTAL = "Pain & Injury Doctor, 1 Test Street, Testville"


@dataclass(frozen=True)
class Email:
    key: str
    composed: Composed

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.composed.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    folder = tmp_path_factory.mktemp("emails")
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"sqlite:///{folder / 'unused.db'}",
            "PUBLIC_BASE_URL": BASE_URL,
            "POSTAL_ADDRESS": POSTAL,
            "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
            "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        }
    )
    built = build(settings, clock=FixedClock(NOW))
    yield built
    built.close()


@pytest.fixture(scope="module")
def emails(app: App) -> list[Email]:
    """Every step rendered for a sample subscriber, exactly as the engine would send it."""
    recipient = Recipient(42, "maria@example.org", "Maria")
    return [
        Email(
            step.key,
            app.composer.compose(
                step, recipient, message_id=app.composer.new_message_id(), now=NOW
            ),
        )
        for step in app.plan.steps
    ]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_the_plan_ships_a_welcome_and_thirty_lessons(emails: list[Email]) -> None:
    """The shipped plan renders 31 emails: the welcome, then days 1 to 30."""
    assert [e.key for e in emails] == ["welcome"] + [f"day{n:02d}" for n in range(1, 31)]


def test_every_email_scores_below_2_with_spamassassin(emails: list[Email], tmp_path: Path) -> None:
    """SpamAssassin (local tests only) scores each of the 31 emails below 2.0."""
    spamassassin = require("spamassassin", "apt-get install -y spamassassin")
    mbox = tmp_path / "all.mbox"
    with mbox.open("wb") as handle:
        for email in emails:
            handle.write(b"From newsletter@example.org Tue Dec  1 07:00:00 2026\n")
            handle.write(email.composed.data.replace(b"\r\n", b"\n") + b"\n")
    report = subprocess.run(
        [str(spamassassin), "-L", "-t", "--mbox", str(mbox)],
        capture_output=True,
        timeout=600,
        check=True,
    ).stdout.decode("utf-8", "replace")
    scores = dict(
        zip(
            re.findall(r"^X-Campaign-Step: [^/]+/(\S+)", report, re.MULTILINE),
            (float(s) for s in re.findall(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", report, re.M)),
            strict=True,
        )
    )
    assert sorted(scores) == sorted(e.key for e in emails)
    too_high = {key: score for key, score in scores.items() if score >= 2.0}
    assert too_high == {}


def test_every_email_fits_a_phone_screen_without_horizontal_scroll(
    emails: list[Email], browser: Browser
) -> None:
    """At 375 px wide no email is wider than the screen."""
    page = browser.new_page(viewport={"width": 375, "height": 800})
    too_wide = {}
    for email in emails:
        page.set_content(email.composed.rendered.html)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 375:
            too_wide[email.key] = width
    page.close()
    assert too_wide == {}


def test_every_email_passes_an_accessibility_scan(emails: list[Email], browser: Browser) -> None:
    """axe-core finds no serious or critical accessibility violation in any email."""
    axe = require(AXE, "npm ci (installs axe-core from package.json)")
    page = browser.new_page(viewport={"width": 375, "height": 800})
    problems: dict[str, list[str]] = {}
    for email in emails:
        page.set_content(email.composed.rendered.html)
        page.add_script_tag(path=str(axe))
        violations = page.evaluate(
            "async () => (await axe.run(document)).violations"
            ".filter(v => ['serious', 'critical'].includes(v.impact))"
            ".map(v => v.id + ': ' + v.help)"
        )
        if violations:
            problems[email.key] = violations
    page.close()
    assert problems == {}


def test_every_email_has_lang_and_presentation_tables_and_readable_text(
    emails: list[Email],
) -> None:
    """Each email declares its language, marks layout tables and sets body text of 16 px+."""
    for email in emails:
        html = email.composed.rendered.html
        assert '<html lang="en"' in html, email.key
        tables = re.findall(r"<table\b[^>]*>", html)
        assert tables, email.key
        assert all('role="presentation"' in t for t in tables), email.key
        sizes = [int(s) for s in re.findall(r"font-size:\s*(\d+)px", html)]
        content = re.search(r'class="content"[^>]*style="([^"]*)"', html)
        assert content is not None, email.key
        assert int(re.findall(r"font-size:\s*(\d+)px", content.group(1))[0]) >= 16
        assert min(sizes) >= 14, email.key  # only the footer's fine print is below 16 px


def test_the_text_part_carries_the_unsubscribe_link_and_postal_address(
    emails: list[Email],
) -> None:
    """The plain-text part of every email spells out the unsubscribe URL and the postal address."""
    for email in emails:
        text = email.message.get_body(preferencelist=("plain",))
        assert text is not None
        content = text.get_content()
        unsubscribe = str(email.message["List-Unsubscribe"]).strip("<>")
        assert unsubscribe in content, email.key
        assert POSTAL in content, email.key
        assert email.composed.rendered.subject, email.key


def test_every_link_is_absolute_under_the_public_base_url(emails: list[Email]) -> None:
    """No relative link, shortener or foreign host: every href starts with PUBLIC_BASE_URL."""
    for email in emails:
        hrefs = re.findall(r'href="([^"]+)"', email.composed.rendered.html)
        assert hrefs, email.key
        assert [h for h in hrefs if not h.startswith(BASE_URL + "/")] == [], email.key


def test_the_welcome_email_arrives_with_the_ebook_link_and_the_pdf_attached(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Sent over SMTP, the welcome email links to the ebook and carries the PDF byte for byte."""
    app, clock = engine(NOW)
    from campaign.people import subscriptions

    subscriptions.subscribe(
        app.db, app.plan, email="maria@example.org", first_name="Maria", timezone="UTC", now=NOW
    )
    tick(app, clock, NOW)
    [mail] = smtp_server.to("maria@example.org")
    message = mail.message
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert (
        'href="https://news.example.org/ebook/concepts-of-self-healing.pdf"' in html.get_content()
    )
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "concepts-of-self-healing.pdf"
    assert attachment.get_content_type() == "application/pdf"
    pdf = ROOT / "assets" / "concepts-of-self-healing.pdf"
    assert attachment.get_content() == pdf.read_bytes()


def test_a_lesson_carries_no_attachment(emails: list[Email]) -> None:
    """Only the welcome email attaches the ebook; lessons stay light."""
    assert [e.key for e in emails if list(e.message.iter_attachments())] == ["welcome"]


def test_every_lesson_has_numbered_steps_a_safety_note_and_a_line_about_tomorrow(
    emails: list[Email],
) -> None:
    """Days 1-30 each teach one exercise in numbered steps, with a safety note and what is next."""
    for email in emails[1:]:
        text = email.composed.rendered.text
        assert re.search(r"^1\. ", text, re.MULTILINE), email.key
        assert "Safety:" in text, email.key
        if email.key != "day30":
            assert "Tomorrow:" in text, email.key


def test_the_greeting_uses_the_first_name_or_a_graceful_fallback(app: App) -> None:
    """A subscriber with a name is greeted by it; one without is greeted "Hi there,"."""
    step = app.plan.steps[1]
    named = app.composer.render(step, Recipient(1, "a@example.org", "Maria"), NOW)
    unnamed = app.composer.render(step, Recipient(2, "b@example.org", ""), NOW)
    assert "Hi Maria," in named.text
    assert "Hi there," in unnamed.text
