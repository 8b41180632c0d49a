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
from html import unescape
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

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
REPLY_TO = "Dr Ann Lee <ann.lee@example.org>"
#: Gmail clips a message whose HTML is larger than this, hiding the footer (and unsubscribe).
GMAIL_CLIP_BYTES = 102 * 1024


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
            "REPLY_TO": REPLY_TO,
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
def every_email(app: App, emails: list[Email]) -> list[Email]:
    """The 31 emails of the plan and the double opt-in email before them."""
    confirmation = app.composer.compose_confirmation(
        Recipient(42, "maria@example.org", ""), 7, message_id=app.composer.new_message_id(), now=NOW
    )
    assert app.plan.confirmation is not None
    return [Email(app.plan.confirmation.key, confirmation), *emails]


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


def test_every_email_scores_below_1_with_spamassassin(
    every_email: list[Email], tmp_path: Path
) -> None:
    """SpamAssassin (local tests only) scores each of the 32 emails, buttons and all, below 1.0."""
    spamassassin = require("spamassassin", "apt-get install -y spamassassin")
    mbox = tmp_path / "all.mbox"
    with mbox.open("wb") as handle:
        for email in every_email:
            handle.write(b"From newsletter@example.org Tue Dec  1 07:00:00 2026\n")
            handle.write(email.composed.data.replace(b"\r\n", b"\n") + b"\n")
    report = subprocess.run(
        [str(spamassassin), "-L", "-t", "--mbox", str(mbox)],
        capture_output=True,
        timeout=600,
        check=True,
    ).stdout.decode("utf-8", "replace")
    keys = [found.split("/")[-1] for found in re.findall(r"^X-Campaign-Step: (\S+)", report, re.M)]
    scores = dict(
        zip(
            keys,
            (float(s) for s in re.findall(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", report, re.M)),
            strict=True,
        )
    )
    assert sorted(scores) == sorted(e.key for e in every_email)
    print(f"highest SpamAssassin score: {max(scores.values())} ({max(scores, key=scores.get)})")
    too_high = {key: score for key, score in scores.items() if score >= 1.0}
    assert too_high == {}


def test_every_email_is_small_enough_that_gmail_does_not_clip_it(every_email: list[Email]) -> None:
    """The HTML part of each email stays under Gmail's 102 KB clipping limit."""
    sizes = {e.key: len(e.composed.rendered.html.encode("utf-8")) for e in every_email}
    print(f"largest HTML part: {max(sizes.values())} bytes ({max(sizes, key=sizes.get)})")
    assert {key: size for key, size in sizes.items() if size >= GMAIL_CLIP_BYTES} == {}


def test_every_email_fits_a_phone_screen_without_horizontal_scroll(
    every_email: list[Email], browser: Browser
) -> None:
    """At 375 px wide no email is wider than the screen."""
    page = browser.new_page(viewport={"width": 375, "height": 800})
    too_wide = {}
    for email in every_email:
        page.set_content(email.composed.rendered.html)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 375:
            too_wide[email.key] = width
    page.close()
    assert too_wide == {}


def _axe_problems(page: Page, emails: list[Email]) -> dict[str, list[str]]:
    axe = require(AXE, "npm ci (installs axe-core from package.json)")
    problems: dict[str, list[str]] = {}
    for email in emails:
        page.set_content(email.composed.rendered.html)
        page.add_script_tag(path=str(axe))
        violations = page.evaluate(
            "async () => (await axe.run(document)).violations"
            ".filter(v => ['serious', 'critical'].includes(v.impact))"
            ".map(v => v.id + ': ' + v.help + ' ' + v.nodes.map(n => n.target).join(' '))"
        )
        if violations:
            problems[email.key] = violations
    return problems


def test_every_email_passes_an_accessibility_scan(
    every_email: list[Email], browser: Browser
) -> None:
    """axe-core finds no serious or critical accessibility violation in any email."""
    page = browser.new_page(viewport={"width": 375, "height": 800})
    problems = _axe_problems(page, every_email)
    page.close()
    assert problems == {}


def test_every_email_keeps_readable_colors_in_dark_mode(
    every_email: list[Email], browser: Browser
) -> None:
    """Rendered as a dark-mode mail app does, no email has a serious contrast (or other) problem,
    and the page really is dark: the dark styles apply."""
    context = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme="dark")
    page = context.new_page()
    problems = _axe_problems(page, every_email)
    page.set_content(every_email[1].composed.rendered.html)
    background = page.evaluate(
        "getComputedStyle(document.querySelector('.content')).backgroundColor"
    )
    context.close()
    assert problems == {}
    assert background == "rgb(26, 33, 37)"


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


def test_every_link_is_absolute_under_the_public_base_url(every_email: list[Email]) -> None:
    """No relative link, shortener or foreign host: every href starts with PUBLIC_BASE_URL, or
    writes to the Reply-To address (the "reply" buttons)."""
    for email in every_email:
        hrefs = re.findall(r'href="([^"]+)"', email.composed.rendered.html)
        assert hrefs, email.key
        ours = (BASE_URL + "/", "mailto:ann.lee@example.org?subject=")
        assert [h for h in hrefs if not h.startswith(ours)] == [], email.key


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
    """Days 1-30 each teach one exercise in numbered steps, as many as it needs (3 to 7, not
    one fixed count), with a safety note; every lesson but the last says what is next."""
    counts = {}
    for email in emails[1:]:
        text = email.composed.rendered.text
        steps = re.findall(r"^(\d+)\. ", text, re.MULTILINE)
        assert steps, email.key
        assert steps[0] == "1", email.key
        counts[email.key] = max(int(n) for n in steps)
        assert "Safety:" in text, email.key
        if email.key != "day30":
            assert "Tomorrow:" in text, email.key
    assert all(3 <= n <= 7 for n in counts.values()), counts
    # Not one fixed recipe (27 of 30 lessons once had exactly five steps).
    assert max(list(counts.values()).count(n) for n in set(counts.values())) <= 12, counts


def test_lessons_are_laid_out_by_purpose_with_a_button_for_their_main_action(
    emails: list[Email],
) -> None:
    """A practice lesson frames its exercise in a card and links its exercise sheet with a
    button; a check-in asks a question answered by a reply button; day 30 ends on a next step."""
    html = {e.key: e.composed.rendered.html for e in emails}
    assert 'class="card card-practice"' in html["day08"]
    assert "Open today's exercise sheet" in unescape(html["day08"])
    for day in ("day07", "day14", "day21", "day28"):
        assert 'class="card card-check-in"' in html[day], day
        number = int(day[3:])
        assert f"mailto:ann.lee@example.org?subject=Day%20{number}%20check-in" in html[day], day
    assert 'class="card card-reflect"' in html["day29"]
    assert "Your next step" in html["day30"]
    assert "concepts-of-self-healing.pdf" in html["day30"].split("Your next step")[1]
    for email in emails:
        assert 'class="button"' in email.composed.rendered.html, email.key
    kinds = {k for k in html if 'class="card card-practice"' in html[k]}
    assert 5 < len(kinds) < 30  # layouts vary: some lessons have no exercise card


def test_buttons_have_an_outlook_fallback_and_the_layout_a_fixed_width_for_outlook(
    every_email: list[Email],
) -> None:
    """Each button is drawn in VML for classic Outlook, inside MSO conditional comments that the
    CSS inliner kept, and Outlook gets a 600 px table around the layout."""
    for email in every_email:
        html = email.composed.rendered.html
        assert '<!--[if mso]><table role="presentation" width="600" align="center"' in html
        buttons = re.findall(r'<a class="button-link"[^>]* href="([^"]+)"', html)
        vml = re.findall(r'<!--\[if mso\]><v:roundrect [^>]*href="([^"]+)"', html)
        assert buttons, email.key
        assert buttons == vml, email.key


def test_every_email_declares_dark_mode_and_pads_its_preheader(every_email: list[Email]) -> None:
    """Mail apps are told the email supports dark mode (with styles for it), and the inbox
    preview shows the preheader then blank padding, never the start of the body."""
    for email in every_email:
        html = email.composed.rendered.html
        assert '<meta name="color-scheme" content="light dark">' in html, email.key
        assert '<meta name="supported-color-schemes" content="light dark">' in html, email.key
        assert "@media (prefers-color-scheme: dark)" in html, email.key
        assert "[data-ogsc]" in html, email.key
        hidden = re.search(r'<div class="preheader"[^>]*>(.*?)</div>', html, re.S)
        assert hidden is not None, email.key
        preheader = email.composed.rendered.preheader
        padding = unescape(hidden.group(1)).removeprefix(preheader)
        assert len(padding) >= 100, email.key
        assert padding.strip("\u2007\ufeff\u034f\u200c\xa0") == "", email.key


def test_every_lesson_shows_its_progress_and_links_its_web_version(emails: list[Email]) -> None:
    """Each lesson says "Day N of 30" in text (with a bar beside it), links its own web
    version, and each "(see day N)" links day N's web version for the same subscriber."""
    for email in emails[1:]:
        html = email.composed.rendered.html
        day = int(email.key[3:])
        assert f"Day {day} of 30" in email.composed.rendered.text, email.key
        assert 'class="progress-done"' in html, email.key
        view = re.search(r'href="([^"]+)"[^>]*>View this email in your browser', html)
        assert view is not None, email.key
        assert view.group(1).endswith("/" + email.key), email.key
        base = view.group(1).removesuffix(email.key)
        for mention in re.findall(r'<a href="([^"]+)"[^>]*>see day (\d+)</a>', html):
            assert mention[0] == f"{base}day{int(mention[1]):02d}", email.key
    day14 = emails[14].composed.rendered.html
    assert len(re.findall(r">see day \d+</a>", day14)) == 5


def test_every_email_names_the_same_red_flags_as_day_4(emails: list[Email]) -> None:
    """The footer's warning signs are day 4's and the ebook's, and emergencies are named as
    emergencies."""
    flags = [
        "pain after a fall or accident",
        "numbness, tingling or weakness in your arms or legs",
        "fever, or a drop in body weight you cannot explain, with back pain",
        "a history of cancer or osteoporosis",
        "constant pain that is worse at night or keeps getting worse",
        "loss of bladder or bowel control, or numbness around the groin or buttocks",
        "chest pain, shortness of breath or sweating with back pain",
    ]
    for email in emails:
        text = " ".join(email.composed.rendered.text.split())
        assert all(flag in text for flag in flags), email.key
        assert "call your local emergency number now" in text, email.key
    day4 = emails[4].composed.rendered.html
    body = day4.split('class="footer"')[0]
    assert all(flag in " ".join(body.split()) for flag in flags)
    ebook = (ROOT / "assets" / "ebook" / "concepts-of-self-healing.md").read_text()
    ebook_text = " ".join(ebook.replace("*", "").split())
    assert [flag for flag in flags if flag not in ebook_text] == []
    assert "call your local emergency number now" in ebook_text


def test_every_campaign_email_has_a_reply_to_a_person(every_email: list[Email]) -> None:
    """REPLY_TO is the Reply-To header of every email, so a reply reaches a person."""
    for email in every_email:
        assert email.message["Reply-To"] == REPLY_TO, email.key


def test_every_image_has_alt_text_and_a_size(every_email: list[Email]) -> None:
    """An image (if any) has alt text and width and height, so images-off reading works."""
    for email in every_email:
        for tag in re.findall(r"<img\b[^>]*>", email.composed.rendered.html):
            assert re.search(r'\balt="[^"]+"', tag), (email.key, tag)
            assert re.search(r'\bwidth="\d+"', tag), (email.key, tag)
            assert re.search(r'\bheight="\d+"', tag), (email.key, tag)


def test_the_greeting_uses_the_first_name_or_a_graceful_fallback(app: App) -> None:
    """A subscriber with a name is greeted by it; one without is greeted "Hi there,"."""
    step = app.plan.steps[1]
    named = app.composer.render(step, Recipient(1, "a@example.org", "Maria"), NOW)
    unnamed = app.composer.render(step, Recipient(2, "b@example.org", ""), NOW)
    assert "Hi Maria," in named.text
    assert "Hi there," in unnamed.text
