"""Custom subscriber fields: `fields:` declarations checked at file:line:field, and values
parsed against them (a bad value names the field and the value)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.domain import subscriber_fields as sf
from campaign.domain.plan import load_plan
from campaign.errors import PlanError, PlanProblem

HEAD = """\
id: demo
name: "Demo plan"
send_time: "07:00"
steps:
  - key: welcome
    day: 0
    subject: "Welcome"
    template: a.html
fields:
"""

GOOD = """\
  pain_area:
    type: choice
    choices: [upper-back, neck, low-back, knee]
    default: upper-back
    label: "Where does it hurt most?"
    ask: true
  desk_hours: {type: number, default: 0, min: 0, max: 24}
  wants_video: {type: boolean, default: false}
  goal: {type: text, max_length: 80}
  surgery_date: {type: date}
"""


#: The declarations above, built without a plan file (for property tests).
DECLARED = sf.field_defs(
    {
        "pain_area": sf.FieldSpec(
            type="choice", choices=["upper-back", "neck", "low-back", "knee"], default="upper-back"
        ),
        "desk_hours": sf.FieldSpec(type="number", default=0, min=0, max=24),
        "wants_video": sf.FieldSpec(type="boolean", default=False),
        "goal": sf.FieldSpec(type="text", max_length=80),
        "surgery_date": sf.FieldSpec(type="date"),
    }
)


def _problems(tmp_path: Path, templates: Path, fields: str) -> list[PlanProblem]:
    path = tmp_path / "plan.yaml"
    path.write_text(HEAD + fields, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path, templates)
    return caught.value.problems


def _declared(tmp_path: Path, templates: Path) -> dict[str, sf.FieldDef]:
    path = tmp_path / "plan.yaml"
    path.write_text(HEAD + GOOD, encoding="utf-8")
    return load_plan(path, templates).declared_fields


def test_declared_fields_load_with_their_defaults(tmp_path: Path, templates: Path) -> None:
    """Each type loads in order, with its stated or implicit default."""
    declared = _declared(tmp_path, templates)
    assert list(declared) == ["pain_area", "desk_hours", "wants_video", "goal", "surgery_date"]
    assert declared["pain_area"].default == "upper-back"
    assert declared["pain_area"].ask
    assert declared["pain_area"].label == "Where does it hurt most?"
    assert declared["desk_hours"].default == 0
    assert declared["wants_video"].default is False
    assert declared["goal"].default == ""
    assert declared["goal"].max_length == 80
    assert declared["surgery_date"].label == "Surgery date"


@pytest.mark.parametrize(
    ("fields", "line", "field", "words"),
    [
        ("  colour: {type: colour}\n", 10, "fields.colour.type", "Input should be"),
        ("  area: {type: choice}\n", 10, "fields.area.type", "needs `choices:`"),
        (
            "  area: {type: choice, choices: [a, b], default: c}\n",
            10,
            "fields.area.default",
            "'c' is not one of a, b",
        ),
        ("  hours: {type: number, default: many}\n", 10, "fields.hours.default", "whole number"),
        ("  hours: {type: number, default: 30, max: 24}\n", 10, "fields.hours.default", "24"),
        ("  hours: {type: number, min: 5, max: 1}\n", 10, "fields.hours.min", "more than max"),
        ("  video: {type: boolean, default: maybe}\n", 10, "fields.video.default", "yes or no"),
        ("  when: {type: date, default: '31/12/2026'}\n", 10, "fields.when.default", "a date"),
        ("  when: {type: date, default: 2026-12-31}\n", 10, "fields.when.default", "in quotes"),
        ("  goal: {type: text, choices: [a]}\n", 10, "fields.goal.choices", "only a choice"),
        ("  goal: {type: text, default: 1.5}\n", 10, "fields.goal.default", "must be text"),
        ("  goal: {type: text, colour: red}\n", 10, "fields.goal.colour", "unknown field"),
        ("  email: {type: text}\n", 10, "fields.email", "built-in name"),
        ("  first_name: {type: text}\n", 10, "fields.first_name", "built-in name"),
        ("  plan: {type: text}\n", 10, "fields.plan", "built-in name"),
        ("  Pain-Area: {type: text}\n", 10, "fields.Pain-Area", "lowercase letter"),
        ("  area:\n    type: choice\n    choices: [a, a]\n", 12, "fields.area.choices", "twice"),
    ],
)
def test_a_bad_declaration_is_reported_at_its_file_line_and_field(
    tmp_path: Path, templates: Path, fields: str, line: int, field: str, words: str
) -> None:
    """Unknown types, defaults that do not fit, choices missing or misplaced, reserved names."""
    problems = _problems(tmp_path, templates, fields)
    assert len(problems) >= 1
    found = problems[0]
    assert (found.path, found.line) == (str(tmp_path / "plan.yaml"), line)
    assert found.field.startswith(field), problems
    assert words in found.problem, problems


def test_every_bad_declaration_is_reported_at_once(tmp_path: Path, templates: Path) -> None:
    """Two bad fields, two lines."""
    problems = _problems(
        tmp_path, templates, "  a: {type: choice}\n  b: {type: number, default: x}\n"
    )
    where = [(p.line, p.field) for p in problems]
    assert where == [(10, "fields.a.type"), (11, "fields.b.default")]


def test_too_many_fields_asked_on_the_signup_page_is_refused(
    tmp_path: Path, templates: Path
) -> None:
    """The public form has room for a dozen questions, not thirty."""
    many = "".join(f"  f{i}: {{type: text, ask: true}}\n" for i in range(sf.MAX_ASKED + 1))
    problems = _problems(tmp_path, templates, many)
    assert [p.field for p in problems] == ["fields"]
    assert "at most 12" in problems[0].problem


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("pain_area", " neck ", "neck"),
        ("desk_hours", "8", 8),
        ("desk_hours", 24, 24),
        ("wants_video", "yes", True),
        ("wants_video", "on", True),
        ("wants_video", "0", False),
        ("wants_video", False, False),
        ("goal", "Run <b>5k</b>", "Run <b>5k</b>"),
        ("surgery_date", "2026-02-28", "2026-02-28"),
    ],
)
def test_a_good_value_is_parsed_to_its_type(
    tmp_path: Path, templates: Path, name: str, raw: object, value: object
) -> None:
    """Text from a form or CSV, or a JSON value, becomes the field's type."""
    declared = _declared(tmp_path, templates)
    assert sf.parse_values(declared, {name: raw}) == {name: value}


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        ("pain_area", "shoulder", "'shoulder' is not one of upper-back, neck"),
        ("desk_hours", "25", "is more than 24"),
        ("desk_hours", "-1", "is less than 0"),
        ("desk_hours", "8.5", "not a whole number"),
        ("desk_hours", True, "not a whole number"),
        ("desk_hours", "9" * 40, "not a whole number"),
        ("wants_video", "perhaps", "not yes or no"),
        ("goal", "x" * 81, "longer than 80"),
        ("goal", "line\r\nBcc: x@example.com", "control characters"),
        ("goal", ["nested"], "must be text"),
        ("goal", {"a": 1}, "must be text"),
        ("surgery_date", "2026-02-30", "not a date"),
        ("surgery_date", "yesterday", "not a date"),
    ],
)
def test_a_bad_value_names_the_field_and_the_value(
    tmp_path: Path, templates: Path, name: str, raw: object, words: str
) -> None:
    """Each refusal says which field, repeats the value (escaped, cut short) and why."""
    declared = _declared(tmp_path, templates)
    with pytest.raises(sf.FieldValueError) as caught:
        sf.parse_values(declared, {name: raw})
    assert caught.value.field == name
    assert caught.value.exit_code == 2
    assert f"field {name!r}" in caught.value.message
    assert words in caught.value.message
    assert "\r" not in caught.value.message
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 200


def test_an_unknown_field_is_refused_or_ignored_as_asked(tmp_path: Path, templates: Path) -> None:
    """Operators' input naming an undeclared field is refused; a public form's is dropped."""
    declared = _declared(tmp_path, templates)
    with pytest.raises(sf.UnknownField) as caught:
        sf.parse_values(declared, {"shoe_size": "42"})
    assert "'shoe_size'" in caught.value.message
    assert "pain_area" in caught.value.message
    assert sf.parse_values(declared, {"shoe_size": "42"}, unknown="ignore") == {}


def test_blank_values_mean_not_given(tmp_path: Path, templates: Path) -> None:
    """An empty form input, CSV cell or JSON null stores nothing: the default applies."""
    declared = _declared(tmp_path, templates)
    assert sf.parse_values(declared, {"desk_hours": "", "goal": "  ", "pain_area": None}) == {}


def test_templates_see_every_field_with_defaults_filled_in(tmp_path: Path, templates: Path) -> None:
    """Stored values win; missing ones, and ones a plan edit made invalid, are defaults."""
    declared = _declared(tmp_path, templates)
    seen = sf.with_defaults(declared, {"pain_area": "knee", "desk_hours": 99, "old": "x"})
    assert seen == {
        "pain_area": "knee",
        "desk_hours": 0,
        "wants_video": False,
        "goal": "",
        "surgery_date": "",
    }


def test_stored_values_round_trip_and_are_capped() -> None:
    """Values are kept as a JSON object; more than the cap is refused, a broken row is none."""
    values: dict[str, sf.FieldValue] = {"a": "ü<x>", "b": 3, "c": True}
    assert sf.decode(sf.encode(values)) == values
    with pytest.raises(sf.BadInput):
        sf.encode({f"f{i}": "x" * 500 for i in range(200)})
    assert sf.decode("not json") == {}
    assert sf.decode("[1, 2]") == {}


def test_two_plans_declaring_a_field_differently_are_told_apart(
    tmp_path: Path, templates: Path
) -> None:
    """A field means the same in every plan: a different type, bound or default is a
    conflict; a different label or `ask` is not."""
    declared = _declared(tmp_path, templates)
    other = dict(declared)
    other["desk_hours"] = sf.FieldDef("desk_hours", sf.FieldKind.NUMBER, 0, "Desk?", max=12, min=0)
    other["wants_video"] = sf.FieldDef("wants_video", sf.FieldKind.TEXT, "", "Video")
    other["pain_area"] = replace(declared["pain_area"], label="Where?", ask=False)
    assert sf.field_conflicts(declared, other) == [
        ("desk_hours", "max"),
        ("wants_video", "kind, default"),
    ]
    assert sf.field_conflicts(declared, declared) == []


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.text(),
        st.integers(),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=True),
        st.lists(st.text(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
    name=st.sampled_from(["pain_area", "desk_hours", "wants_video", "goal", "surgery_date"]),
)
def test_any_value_is_parsed_or_refused_in_words(raw: object, name: str) -> None:
    """Whatever a hostile client sends, the answer is a value of the field's type or a
    FieldValueError naming the field; never another exception."""
    declared = {field.name: field for field in DECLARED}
    refused: sf.FieldValueError | None = None
    parsed: dict[str, sf.FieldValue] = {}
    try:
        parsed = sf.parse_values(declared, {name: raw})
    except sf.FieldValueError as exc:
        refused = exc
    if refused is not None:
        assert refused.field == name
        assert len(refused.message) < 300
    assert set(parsed) <= {name}
    assert all(isinstance(value, str | int | bool) for value in parsed.values())
