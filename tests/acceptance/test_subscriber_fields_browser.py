"""A visitor in a real browser answering the signup page's custom-field questions."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.acceptance.conftest import NOW, Site, _serve
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer, free_port
from tests.tools import CHROMIUM, CHROMIUM_ARGS, ROOT, require

FIELDS = """\
fields:
  pain_area:
    type: choice
    choices: [upper-back, neck, low-back, knee]
    default: upper-back
    label: "Where does it hurt most?"
    ask: true
  desk_hours: {type: number, default: 0, min: 0, max: 24, label: "Hours at a desk a day", ask: true}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def site(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path, tmp_path: Path
) -> Iterator[Site]:
    """The public pages of an engine whose plan asks for two fields and whose welcome shows
    them; no double opt-in, so the welcome follows the signup."""
    templates = tmp_path / "emails"
    shutil.copytree(ROOT / "templates" / "emails", templates)
    welcome = templates / "welcome.html"
    line = "<p>Area: {{ subscriber.fields.pain_area }}, {{ subscriber.fields.desk_hours }} h</p>"
    welcome.write_text(welcome.read_text().replace("{% endblock %}", line + "{% endblock %}", 1))
    plan_file.write_text(plan_file.read_text().replace("steps:\n", FIELDS + "steps:\n", 1))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, clock = engine(
        NOW,
        PUBLIC_BASE_URL=url,
        PLAN_PATH=str(plan_file),
        TEMPLATES_DIR=str(templates),
        DOUBLE_OPT_IN="false",
    )
    serving = _serve(app, port)
    next(serving)
    with httpx.Client(base_url=url, timeout=10) as client:
        yield Site(app, clock, url, client, smtp_server)
    next(serving, None)


def test_a_visitor_answers_the_questions_and_the_welcome_uses_the_answers(
    site: Site, browser: Browser
) -> None:
    """The page asks both questions; an answer out of range is refused under its field with
    what was typed kept; corrected, the signup goes through and the welcome shows the answers."""
    page = browser.new_page()
    page.goto(site.url + "/subscribe")
    area = page.get_by_label("Where does it hurt most?")
    assert area.input_value() == "upper-back"  # the default, preselected
    area.select_option("knee")
    page.get_by_label("Email address").fill("nia@example.org")
    page.get_by_label("Hours at a desk a day").fill("30")
    page.get_by_role("button", name="Send me the plan").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "'desk_hours'" in alert.inner_text()
    assert "more than 24" in alert.inner_text()
    assert page.get_by_label("Where does it hurt most?").input_value() == "knee"
    hours = page.get_by_label("Hours at a desk a day")
    assert hours.get_attribute("aria-invalid") == "true"
    hours.fill("8")
    page.get_by_role("button", name="Send me the plan").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    [welcome] = site.mail_to("nia@example.org")
    html = welcome.get_body(preferencelist=("html",))
    assert html is not None
    assert "Area: knee, 8 h" in html.get_content()
    page.close()
