"""Which templates are proven, from their syntax tree alone, to only print per-email values."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment, FileSystemLoader, select_autoescape

from campaign.content.template_flow import only_prints
from campaign.domain.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
STRINGS = ("subject", "preheader", "unsubscribe_url")
KEYS = ("email", "first_name", "name")


def _environment(templates: dict[str, str]) -> Environment:
    return Environment(
        loader=DictLoader(templates),
        autoescape=select_autoescape(["html"], default_for_string=False),
    )


def _proven(body: str, **others: str) -> bool:
    environment = _environment({"email.html": body, **others})
    return only_prints(environment, "email.html", STRINGS, "subscriber", KEYS)


def test_every_shipped_step_is_proven_to_only_print_its_values() -> None:
    """The shipped emails need no render per email: every step's template only prints."""
    plan = load_plan(ROOT / "plans" / "thirty_day.yaml", ROOT / "templates" / "emails")
    environment = Environment(
        loader=FileSystemLoader(ROOT / "templates" / "emails"),
        autoescape=select_autoescape(["html"]),
    )
    steps = [*plan.steps, *([plan.confirmation] if plan.confirmation else [])]
    strings = (*STRINGS, "confirm_url", "view_url", "lesson_base")
    unproven = [
        step.key
        for step in steps
        if not only_prints(environment, step.template, strings, "subscriber", KEYS)
    ]
    assert unproven == []


@pytest.mark.parametrize(
    "body",
    [
        "<p>Hi {{ subscriber.name }}, {{ subject }}</p>",
        '<a href="{{ unsubscribe_url }}">{{ subscriber["email"] }}</a>',
        "{% if day %}<p>{{ subscriber.first_name }}</p>{% endif %}",
        "{% for tip in tips %}<li>{{ tip|upper }} {{ subscriber.name }}</li>{% endfor %}",
        "{% block b %}{{ subscriber.name }}{% endblock %}{{ self.b() }}",
    ],
    ids=["print", "item", "constant branch", "constant loop", "block again"],
)
def test_a_template_that_only_prints_its_values_is_proven(body: str) -> None:
    """Values printed as they are, wherever constant logic puts them, are proven."""
    assert _proven(body)


@pytest.mark.parametrize(
    "body",
    [
        "{% if subscriber.first_name %}Hi {{ subscriber.first_name }}{% endif %}",
        "{{ subscriber.name|upper }}",
        "{{ subscriber.name ~ '!' }}",
        "{{ subject if day else '' }}",
        "{{ subscriber }}",
        "{{ subscriber.items }}",
        "{{ subscriber.phone }}",
        "{% set subject = 'Hello' %}{{ subject }}",
        "{% set x = subscriber.name %}{{ x }}",
        "{% set x %}{{ subscriber.name }}{% endset %}{{ x }}",
        "{% macro m() %}{{ subscriber.name }}{% endmacro %}{{ m() }}",
        "{% filter upper %}{{ subscriber.name }}{% endfilter %}",
        "{% autoescape false %}{{ subscriber.name }}{% endautoescape %}",
        "{{ lipsum() }}",
        "{{ ['a', 'b']|random }}",
        "{% block b %}{{ subscriber.name }}{% endblock %}{{ self.b()|upper }}",
        "{% include template_name %}",
        '{% include "part.txt" %}',
        '{% include "missing.html" %}',
    ],
    ids=[
        "branch",
        "filter",
        "concatenation",
        "condition",
        "whole mapping",
        "dict method",
        "unknown key",
        "shadowed",
        "assigned",
        "block set",
        "macro",
        "filter block",
        "unescaped",
        "random global",
        "random filter",
        "block transformed",
        "dynamic include",
        "unescaped include",
        "missing include",
    ],
)
def test_a_template_that_does_more_than_print_a_value_is_not_proven(body: str) -> None:
    """Values that decide, are transformed, captured, unescaped, or meet randomness: not proven."""
    assert not _proven(body, **{"part.txt": "{{ subscriber.name }}"})


def test_a_parent_template_is_read_too() -> None:
    """A child that only prints is not proven when the layout it extends branches on a value."""
    child = '{% extends "base.html" %}{% block content %}{{ subscriber.name }}{% endblock %}'
    layout = "{% if subject == 'x' %}!{% endif %}{% block content %}{% endblock %}"
    assert _proven(child, **{"base.html": "{% block content %}{% endblock %}"})
    assert not _proven(child, **{"base.html": layout})


def test_an_illustration_of_a_constant_key_keeps_a_template_proven() -> None:
    """`{{ illustration("chin-tuck") }}` prints the same for every email: still proven."""
    assert _proven('<h2>Today</h2>\n{{ illustration("chin-tuck") }}<p>{{ subscriber.name }}</p>')


@pytest.mark.parametrize(
    "body",
    [
        "{{ illustration(subscriber.name) }}",
        '{{ illustration("a", size=subject) }}',
        '{% set illustration = subscriber.name %}{{ illustration("a") }}',
        '{% for illustration in [subscriber.name] %}{{ illustration("a") }}{% endfor %}',
    ],
    ids=["per-email key", "keyword", "reassigned", "loop variable"],
)
def test_an_illustration_of_a_per_email_value_or_a_reused_name_is_not_proven(body: str) -> None:
    """A key that varies by email, or a name that no longer means the function, is not proven."""
    assert not _proven(body)
