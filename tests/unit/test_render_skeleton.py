"""Rendering through a step's skeleton gives what rendering in full gives: the same subject,
preheader and text, and HTML a browser reads the same, for the shipped plan and odd templates."""

from __future__ import annotations

import logging
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign.content.plan_check import shared_context
from campaign.content.render import RenderedEmail, Renderer, subscriber_context
from campaign.domain.plan import Plan, Step, load_plan
from campaign.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "https://news.example.org"
SETTINGS = Settings.from_env(
    {
        "PUBLIC_BASE_URL": BASE_URL,
        "POSTAL_ADDRESS": "Pain & Injury Doctor, 1 Test Street, Testville",
        "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
        "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
    }
)
PLAN = load_plan(SETTINGS.plan_path, SETTINGS.templates_dir)
STEPS = [*PLAN.steps, *([PLAN.confirmation] if PLAN.confirmation else [])]
ODD_NAMES = [
    "Ann",
    "José",
    "",
    "Zoë\u00a0Müller",
    "O'Brien & <Co>",
    '"Bob"',
    "a  b",
    "😀",
    "https://evil.example",
    "mailto:x",
    "&amp;",
    "&#65;",
    "Probe0z",
    "x" * 150,
    "=?utf-8?q?x=0D=0ABcc:_a@b?=",
    "Ann\u2028Bcc: a@b",
    "<b>bold</b>",
    " Ann ",
    "{{ 7*7 }}",
    "{% raw %}",
    "{{ config.__class__ }}",
]


class _Document(HTMLParser):
    """What a browser reads from HTML: tags, attributes and text, character references decoded."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, object]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", (tag, attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if self.events and self.events[-1][0] == "text":
            data = str(self.events.pop()[1]) + data
        self.events.append(("text", data))


def _extra(step: Step, subscriber_id: int) -> dict[str, str]:
    lessons = f"{BASE_URL}/view/tok-{subscriber_id}.v_W/"
    extra = {
        "unsubscribe_url": f"{BASE_URL}/unsubscribe/tok-{subscriber_id}.x_Y",
        "view_url": lessons + step.key,
        "lesson_base": lessons,
    }
    if step is PLAN.confirmation:
        extra |= {"confirm_url": f"{BASE_URL}/confirm/tok-{subscriber_id}", "view_url": ""}
        extra["lesson_base"] = ""
    return extra


def _assert_same(fast: RenderedEmail, full: RenderedEmail) -> None:
    assert (fast.subject, fast.preheader) == (full.subject, full.preheader)
    assert fast.text == full.text
    assert _Document(fast.html).events == _Document(full.html).events


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """One renderer for many emails, as in a sending pass: skeletons are built once, then reused."""
    return Renderer(PLAN, SETTINGS.templates_dir, shared_context(SETTINGS, PLAN))


def _render_both(renderer: Renderer, step: Step, name: str, number: int) -> None:
    subscriber = subscriber_context(f"reader{number}@example.org", name)
    extra = _extra(step, number)

    fast = renderer.render_for(step, subscriber, **extra)
    full = renderer.render(step, renderer.context(step, subscriber, **extra))

    _assert_same(fast, full)


@pytest.mark.parametrize("step", STEPS, ids=[step.key for step in STEPS])
def test_every_shipped_step_renders_the_same_through_its_skeleton(
    renderer: Renderer, step: Step
) -> None:
    """All 32 shipped emails, for names plain and odd, equal the full render, text exactly."""
    for number, name in enumerate(ODD_NAMES):
        _render_both(renderer, step, name, number)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step=st.sampled_from(STEPS), name=st.text(max_size=40), number=st.integers(0, 10**6))
def test_any_name_renders_the_same_through_the_skeleton(
    renderer: Renderer, step: Step, name: str, number: int
) -> None:
    """For any name at all, the filled-in skeleton equals the full render."""
    _render_both(renderer, step, name, number)


def test_the_shipped_steps_all_use_their_skeleton(caplog: pytest.LogCaptureFixture) -> None:
    """No shipped template makes the renderer fall back to inlining CSS for every email."""
    renderer = Renderer(PLAN, SETTINGS.templates_dir, shared_context(SETTINGS, PLAN))
    caplog.set_level(logging.DEBUG, logger="campaign.render")
    for number, step in enumerate(STEPS):
        for name in ("Ann", ""):
            renderer.render_for(
                step, subscriber_context(f"r{number}@example.org", name), **_extra(step, number)
            )

    assert [r.getMessage() for r in caplog.records if "rendered in full" in r.getMessage()] == []


ODD_TEMPLATES = {
    "class": '<style>.Ann { color: red; }</style><p class="{{ subscriber.name }}">Hi</p>',
    "branch": "<p>{% if subscriber.first_name %}Hi {{ subscriber.first_name }}{% endif %}!</p>",
    "filter": "<p>{{ subscriber.name|upper }} {{ subscriber.name|length }}</p>",
    "link_text": '<p><a href="{{ unsubscribe_url }}">{{ unsubscribe_url }}</a></p>',
    "selector": '<style>a[href^="https://news"] { color: red; }</style>'
    '<a href="{{ unsubscribe_url }}">Leave</a>',
    "reference": "<p>&{{ subscriber.name }};</p>",
    "numeric": "<p>&#{{ subscriber.name }}</p>",
    "edges": "<p> {{ subscriber.first_name }} </p><p>{{ subscriber.first_name }}</p>",
    "alt": '<img alt="{{ subscriber.name }}"><p title={{ subscriber.name }}>x</p>',
    "raw_text": "<textarea>{{ subscriber.name }}</textarea><!-- {{ subscriber.name }} -->",
    "named_link": '<a href="mailto:{{ subscriber.email }}">{{ subscriber.email }}</a>',
    "compare": '<p>{% if subscriber.name == "Ann" %}Welcome back{% endif %}</p>',
    "same_link": '<a href="{{ subscriber.name }}">{{ subscriber.first_name }}</a>',
    "style": "<style>p { font-family: {{ subscriber.name }}; }</style><p>x</p>",
    # Printed, then read again: the stand-ins take the same branch, "Ann" does not.
    "macro": '{% macro m() %}{{ subscriber.name }}{% endmacro %}{% if "Ann" in m() %}Hi{% endif %}',
    "set_block": '{% set x %}{{ subscriber.name }}{% endset %}{% if "Ann" in x %}Hi{% endif %}',
    "filter_block": '{% filter replace("Ann", "Anna") %}{{ subscriber.name }}{% endfilter %}',
    "own_block": "{% block b %}{{ subscriber.name }}{% endblock %}"
    '{% if "Ann" in self.b() %}Hi{% endif %}',
    # Printed unescaped: "O'Brien & <Co>" is not what the stand-ins' escaping says.
    "unescaped": "{% autoescape false %}<p>{{ subscriber.name }}</p>{% endautoescape %}",
    "text_include": '<p>{% include "part.txt" %}</p>',
    # Outlook's button: a value as the href of its VML shape, in a conditional comment.
    "mso_button": '<!--[if mso]><v:roundrect href="mailto:{{ subscriber.email }}" '
    'arcsize="10%"><center>Go</center></v:roundrect><![endif]-->'
    '<a href="mailto:{{ subscriber.email }}">Go</a>',
    "mso_text": "<!--[if mso]><center>{{ subscriber.name }}</center><![endif]--><p>x</p>",
    "mso_style": '<!--[if mso]><v:roundrect style="width:{{ subscriber.name }}px">'
    "</v:roundrect><![endif]-->",
}


@pytest.fixture(scope="module")
def odd_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    folder = tmp_path_factory.mktemp("odd")
    # Not autoescaped (by its name), as an included part of an HTML email could be.
    (folder / "part.txt").write_text("{{ subscriber.name }}", encoding="utf-8")
    steps = []
    for day, (key, body) in enumerate(ODD_TEMPLATES.items()):
        (folder / f"{key}.html").write_text(
            f"<html><head><title>{{{{ subject }}}}</title></head><body>{body}</body></html>",
            encoding="utf-8",
        )
        steps.append(
            f'  - {{key: {key}, day: {day}, subject: "Hi {{{{ subscriber.name }}}}",'
            f" template: {key}.html}}"
        )
    plan = folder / "plan.yaml"
    plan.write_text(
        'id: odd\nname: "Odd"\nsend_time: "07:00"\nsteps:\n' + "\n".join(steps) + "\n",
        encoding="utf-8",
    )
    return load_plan(plan, folder)


@pytest.mark.parametrize("key", ODD_TEMPLATES)
@pytest.mark.parametrize(
    "name",
    ["Ann", "", "O'Brien & <Co>", "Zoë\u00a0M", "https://x.example", "amp", "A } p { color: red"],
)
def test_a_template_that_does_more_than_print_a_value_still_renders_right(
    odd_plan: Plan, key: str, name: str
) -> None:
    """Values in classes, conditions, filters, selectors or raw text give the full render."""
    renderer = Renderer(odd_plan, odd_plan.source.parent, {})
    step = odd_plan.step_by_key(key)
    assert step is not None
    for number, first_name in enumerate(("Bob", name, "")):  # later emails reuse the skeleton
        subscriber = subscriber_context(f"r{number}@example.org", first_name)
        extra = {"unsubscribe_url": f"https://news.example.org/u/{number}"}
        fast = renderer.render_for(step, subscriber, **extra)
        full = renderer.render(step, renderer.context(step, subscriber, **extra))
        _assert_same(fast, full)


FIELD_TEMPLATES = {
    "printed": "<p>{{ subscriber.fields.area }}</p>",
    "indexed": "<p>{{ subscriber['fields']['area'] }}</p>",
    "whole": "<p>{{ subscriber }}</p>",
    "aliased": "{% set s = subscriber %}<p>{{ s.fields.area }}</p>",
    "included": '<p>{% include "uses_area.html" %}</p>',
    "branch": "<p>{% if subscriber.fields.video %}Video{% endif %}</p>",
    "number": "<p>{{ subscriber.fields.hours }} {{ subscriber.fields.hours + 1 }}</p>",
    "name_only": "<p>{{ subscriber.name }} {{ subscriber['email'] }}</p>",
    "in_subject": "<p>{{ subscriber.name }}</p>",
}


@pytest.fixture(scope="module")
def fields_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """A plan declaring custom fields, one step per way a template may (not) read them."""
    folder = tmp_path_factory.mktemp("fields")
    (folder / "uses_area.html").write_text("{{ subscriber.fields.area }}", encoding="utf-8")
    steps = []
    for day, (key, body) in enumerate(FIELD_TEMPLATES.items()):
        (folder / f"{key}.html").write_text(
            f"<html><head><title>{{{{ subject }}}}</title></head><body>{body}</body></html>",
            encoding="utf-8",
        )
        subject = "{{ subscriber.fields.area }}" if key == "in_subject" else "Hi"
        steps.append(f'  - {{key: {key}, day: {day}, subject: "{subject}", template: {key}.html}}')
    plan = folder / "plan.yaml"
    plan.write_text(
        'id: f\nname: "F"\nsend_time: "07:00"\n'
        "fields:\n  area: {type: choice, choices: [neck, knee], default: neck}\n"
        "  video: {type: boolean}\n  hours: {type: number}\n"
        "steps:\n" + "\n".join(steps) + "\n",
        encoding="utf-8",
    )
    return load_plan(plan, folder)


@pytest.fixture(scope="module")
def fields_renderer(fields_plan: Plan) -> Renderer:
    return Renderer(fields_plan, fields_plan.source.parent, shared_context(SETTINGS, PLAN))


def test_only_steps_that_may_read_custom_fields_are_given_them(fields_plan: Plan) -> None:
    """A step that never reads `subscriber.fields` renders without them (all its values text,
    so its skeleton holds); any other use of `subscriber` keeps them; each renders right."""
    renderer = Renderer(fields_plan, fields_plan.source.parent, shared_context(SETTINGS, PLAN))
    given = {step.key for step in fields_plan.steps if renderer.gives_fields(step)}
    assert given == set(FIELD_TEMPLATES) - {"name_only"}
    for area, video in [("knee", True), ("neck", False)] + [(odd, True) for odd in ODD_NAMES]:
        fields = {"area": area, "video": video, "hours": 8}
        for number, step in enumerate(fields_plan.steps):
            subscriber = subscriber_context(f"r{number}@example.org", "Ann", fields)
            extra = _extra(step, number)
            fast = renderer.render_for(step, subscriber, **extra)
            full = renderer.render(step, renderer.context(step, subscriber, **extra))
            _assert_same(fast, full)
            if step.key in ("printed", "indexed", "included") and area == "knee":
                assert "knee" in fast.html


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(area=st.text(max_size=40), hours=st.integers(-(10**9), 10**9), video=st.booleans())
def test_any_custom_field_values_render_the_same_through_the_skeleton(
    fields_renderer: Renderer, area: str, hours: int, video: bool
) -> None:
    """For any text, number and yes/no, every step of the fields plan equals the full render
    (one renderer for all: skeletons built once, reused for every email, as in a pass)."""
    renderer, fields_plan = fields_renderer, fields_renderer.plan
    subscriber = subscriber_context(
        "r@example.org", "Ann", {"area": area, "video": video, "hours": hours}
    )
    for number, step in enumerate(fields_plan.steps):
        extra = _extra(step, number)
        fast = renderer.render_for(step, subscriber, **extra)
        _assert_same(fast, renderer.render(step, renderer.context(step, subscriber, **extra)))
