"""`{{ illustration("key") }}` in a lesson: one described image, or a located error."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from campaign.content.plan_check import check_plan, shared_context
from campaign.content.render import Renderer, subscriber_context
from campaign.domain.plan import load_plan
from campaign.errors import PlanError
from campaign.settings import Settings
from tests.tools import ROOT

TEMPLATES = ROOT / "templates" / "emails"
PLAN_FILE = ROOT / "plans" / "thirty_day.yaml"
#: the signed links the composer gives every email
LINKS = {"unsubscribe_url": "u", "view_url": "v/day03", "lesson_base": "v/"}


def _settings(templates: Path) -> Settings:
    return Settings.from_env(
        {
            "PLAN_PATH": str(PLAN_FILE),
            "TEMPLATES_DIR": str(templates),
            "PUBLIC_BASE_URL": "https://example.org",
        }
    )


def test_a_lesson_shows_its_illustration_as_one_sized_described_image() -> None:
    """Day 3's HTML holds the chin tuck PNG under PUBLIC_BASE_URL with size and alt text."""
    settings = _settings(TEMPLATES)
    plan = load_plan(PLAN_FILE, TEMPLATES)
    renderer = Renderer(plan, TEMPLATES, shared_context(settings, plan))
    step = next(step for step in plan.steps if step.template == "day03.html")

    email = renderer.render_for(step, subscriber_context("a@example.org", "Ann"), **LINKS)

    assert email.html.count("<img ") == 1
    assert 'src="https://example.org/images/chin-tuck.png"' in email.html
    assert 'width="552" height="240"' in email.html
    assert 'alt="Chin tuck. Start: standing with the head poked forward' in email.html
    # With images off, the plain text still says what the picture shows, without markup.
    assert "[Chin tuck. Start:" in email.text
    assert "<img" not in email.text


def test_plan_check_names_an_unknown_illustration_with_its_file_and_line(tmp_path: Path) -> None:
    """A misspelled key is a plan problem at the template's file:line, naming the key."""
    templates = tmp_path / "emails"
    shutil.copytree(TEMPLATES, templates)
    lesson = templates / "day03.html"
    lesson.write_text(
        lesson.read_text().replace('illustration("chin-tuck")', 'illustration("chin-tuk")')
    )
    line = lesson.read_text().splitlines().index('{{ illustration("chin-tuk") }}') + 1

    with pytest.raises(PlanError) as caught:
        check_plan(_settings(templates))

    assert f"{lesson}:{line}: unknown illustration 'chin-tuk'" in str(caught.value)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def test_every_lesson_image_has_alt_text_a_size_and_a_file_the_site_serves() -> None:
    """Every <img> of every email: real alt text, width and height, and an existing file."""
    settings = _settings(TEMPLATES)
    plan = load_plan(PLAN_FILE, TEMPLATES)
    renderer = Renderer(plan, TEMPLATES, shared_context(settings, plan))
    ann = subscriber_context("a@example.org", "Ann")
    illustrated = 0
    for step in plan.steps:
        parser = _Images()
        parser.feed(renderer.render_for(step, ann, **LINKS).html)
        for image in parser.images:
            src = str(image["src"])
            assert src.startswith("https://example.org/images/"), (step.key, src)
            assert (TEMPLATES / "images" / src.rsplit("/", 1)[1]).is_file(), src
            assert len(str(image.get("alt") or "")) > 60, (step.key, src)
            assert (image.get("width"), image.get("height")) == ("552", "240"), step.key
        illustrated += bool(parser.images)
    assert illustrated == 24
