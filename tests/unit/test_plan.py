"""Loading a plan: every mistake is reported at its file, line and field, all at once."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from campaign.domain.plan import Plan, load_plan
from campaign.errors import PlanError, PlanProblem

ROOT = Path(__file__).resolve().parents[2]

# Lines 1-12 of a valid two-step plan; tests below swap single lines to break it.
VALID = """\
id: demo
name: "Demo plan"
send_time: "07:00"
steps:
  - key: welcome
    day: 0
    subject: "Welcome"
    template: a.html
  - key: day01
    day: 1
    subject: "Day one"
    template: a.html
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _replace_line(text: str, number: int, new: str) -> str:
    lines = text.splitlines()
    lines[number - 1] = new
    return "\n".join(lines) + "\n"


def _problems(tmp_path: Path, templates: Path, text: str) -> list[PlanProblem]:
    with pytest.raises(PlanError) as caught:
        load_plan(_write(tmp_path, text), templates)
    assert caught.value.exit_code == 2
    return caught.value.problems


def _where(problems: list[PlanProblem]) -> list[tuple[int | None, str]]:
    return [(p.line, p.field) for p in problems]


def test_a_valid_plan_loads_into_frozen_steps(tmp_path: Path, templates: Path) -> None:
    """A correct plan file loads with its steps in order and its send time as a local time."""
    plan = load_plan(_write(tmp_path, VALID), templates)

    assert [(s.index, s.key, s.day) for s in plan.steps] == [(0, "welcome", 0), (1, "day01", 1)]
    assert plan.send_time == time(7, 0)
    assert plan.last_day == 1


def test_a_missing_template_names_the_file_and_line(tmp_path: Path, templates: Path) -> None:
    """A template that is not in the templates folder is reported with its full path and line."""
    path = _write(tmp_path, _replace_line(VALID, 12, "    template: b.html"))

    with pytest.raises(PlanError) as caught:
        load_plan(path, templates)

    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.field) == (str(path), 12, "steps[1].template")
    assert problem.problem == f"{templates / 'b.html'} does not exist"
    assert str(caught.value) == (
        f"{path}:12: steps[1].template: {templates / 'b.html'} does not exist"
    )


def test_a_template_outside_the_templates_folder_is_refused(
    tmp_path: Path, templates: Path
) -> None:
    """A template path that climbs out of the templates folder is an error on its line."""
    (tmp_path / "secret.html").write_text("x", encoding="utf-8")
    text = _replace_line(VALID, 8, "    template: ../secret.html")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (8, "steps[0].template")
    assert "inside the templates folder" in problem.problem


def test_a_duplicate_mapping_key_is_an_error_on_the_duplicate_line(
    tmp_path: Path, templates: Path
) -> None:
    """A key written twice in one step is refused at the second one instead of silently kept."""
    text = _replace_line(VALID, 8, '    subject: "Again"\n    template: a.html')

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (8, "")
    assert 'duplicate key "subject"' in problem.problem


def test_a_duplicate_top_level_key_is_an_error_on_the_duplicate_line(
    tmp_path: Path, templates: Path
) -> None:
    """A second `name:` at the top of the plan is refused at its own line."""
    text = _replace_line(VALID, 3, 'send_time: "07:00"\nname: "Other name"')

    [problem] = _problems(tmp_path, templates, text)

    assert problem.line == 4
    assert 'duplicate key "name"' in problem.problem


def test_a_tab_character_is_reported_on_its_line(tmp_path: Path, templates: Path) -> None:
    """A tab used for indentation is reported on the line that holds it."""
    text = _replace_line(VALID, 6, "\tday: 0")

    [problem] = _problems(tmp_path, templates, text)

    assert problem.line == 6
    assert "tab character" in problem.problem


@pytest.mark.parametrize(
    ("line", "replacement", "field"),
    [
        (3, "send_time: 7.30", "send_time"),
        (7, "    subject: 2026", "steps[0].subject"),
        (2, "name: 2026", "name"),
        (12, "    template: 2026", "steps[1].template"),
        (11, "    subject: true", "steps[1].subject"),
    ],
)
def test_a_number_where_text_is_expected_asks_for_quotes(
    tmp_path: Path, templates: Path, line: int, replacement: str, field: str
) -> None:
    """An unquoted number or boolean where text belongs is refused with advice to quote it."""
    text = _replace_line(VALID, line, replacement)

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (line, field)
    assert "put it in quotes" in problem.problem


def test_a_yaml_11_boolean_word_is_not_taken_for_a_boolean(tmp_path: Path, templates: Path) -> None:
    """`attach: no` is refused on its line (YAML 1.2 reads `no` as text), never read as False."""
    text = _replace_line(VALID, 8, "    template: a.html\n    attach: no")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (9, "steps[0].attach")
    assert "must be true or false" in problem.problem


def test_a_misspelt_field_is_reported_as_unknown(tmp_path: Path, templates: Path) -> None:
    """A misspelt field like `attachment:` is an unknown-field error on its line."""
    text = _replace_line(VALID, 8, "    template: a.html\n    attachment: x.pdf")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (9, "steps[0].attachment")
    assert "unknown field" in problem.problem


def test_attach_true_needs_an_ebook_declared_in_the_plan(tmp_path: Path, templates: Path) -> None:
    """A step asking to attach the ebook of a plan that declares none is refused at `attach`."""
    text = _replace_line(VALID, 8, "    template: a.html\n    attach: true")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (9, "steps[0].attach")
    assert "no ebook" in problem.problem


def test_the_ebook_path_is_relative_to_the_plan_file(tmp_path: Path, templates: Path) -> None:
    """`ebook.file` and attachments resolve beside the plan, wherever the command runs."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "guide.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "plans").mkdir()
    text = VALID.replace(
        "steps:", 'ebook:\n  title: "Guide"\n  file: ../assets/guide.pdf\nsteps:', 1
    )
    text = text.replace("    template: a.html", "    template: a.html\n    attach: true", 1)
    plan_file = tmp_path / "plans" / "plan.yaml"
    plan_file.write_text(text)

    plan = load_plan(plan_file, templates)

    assert plan.ebook is not None
    assert plan.ebook.file == tmp_path / "assets" / "guide.pdf"
    assert plan.steps[0].attachments == (tmp_path / "assets" / "guide.pdf",)


@pytest.mark.parametrize("value", ['"25:00"', '"07:60"', '"7am"', '"7"', '""'])
def test_an_invalid_send_time_is_reported(tmp_path: Path, templates: Path, value: str) -> None:
    """A send time that is not a real HH:MM local time is refused with an example of one."""
    text = _replace_line(VALID, 3, f"send_time: {value}")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (3, "send_time")
    assert 'must be a local time such as "07:00"' in problem.problem


def test_a_duplicate_step_key_is_reported_on_the_second_step(
    tmp_path: Path, templates: Path
) -> None:
    """Two steps with the same key are refused at the second key, naming the first step."""
    text = _replace_line(VALID, 9, "  - key: welcome")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (9, "steps[1].key")
    assert problem.problem == "'welcome' is already used by steps[0]"


def test_a_duplicate_day_is_reported_on_the_second_step(tmp_path: Path, templates: Path) -> None:
    """Two steps on the same day are refused, since a subscriber gets one email a day."""
    text = _replace_line(VALID, 10, "    day: 0")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (10, "steps[1].day")
    assert "day 0 is already used by steps[0]" in problem.problem


def test_days_out_of_order_are_reported(tmp_path: Path, templates: Path) -> None:
    """A step whose day is earlier than the step before it is refused at its `day` line."""
    text = VALID + '  - key: day00b\n    day: 0\n    subject: "Late"\n    template: a.html\n'
    text = _replace_line(text, 10, "    day: 2")
    text = _replace_line(text, 14, "    day: 1")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (14, "steps[2].day")
    assert "keep steps in order" in problem.problem


def test_a_missing_required_field_is_reported_at_its_step(tmp_path: Path, templates: Path) -> None:
    """A step without a subject is reported at the line where that step starts."""
    text = _replace_line(VALID, 11, '    preheader: "no subject here"')

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (9, "steps[1].subject")
    assert problem.problem == "is required"


def test_a_missing_attachment_is_reported(tmp_path: Path, templates: Path) -> None:
    """An attachment path that does not exist is refused at its list item's line."""
    missing = tmp_path / "guide.pdf"
    text = _replace_line(VALID, 8, f"    template: a.html\n    attachments:\n      - {missing}")

    [problem] = _problems(tmp_path, templates, text)

    assert (problem.line, problem.field) == (10, "steps[0].attachments[0]")
    assert problem.problem == f"{missing} does not exist"


def test_an_existing_attachment_is_accepted(tmp_path: Path, templates: Path) -> None:
    """An attachment that exists loads as a path on its step."""
    guide = tmp_path / "guide.pdf"
    guide.write_bytes(b"%PDF-1.4")
    text = _replace_line(VALID, 8, f"    template: a.html\n    attachments:\n      - {guide}")

    plan = load_plan(_write(tmp_path, text), templates)

    assert plan.steps[0].attachments == (guide,)


def test_schema_problems_are_reported_together(tmp_path: Path, templates: Path) -> None:
    """Several schema mistakes in one file come back in one error, each on its own line."""
    text = _replace_line(VALID, 7, "    subject: 2026")
    text = _replace_line(text, 11, "    attach: no")

    problems = _problems(tmp_path, templates, text)

    assert _where(problems) == [
        (7, "steps[0].subject"),
        (9, "steps[1].subject"),
        (11, "steps[1].attach"),
    ]
    assert str(problems[0]).startswith(f"{tmp_path / 'plan.yaml'}:7: steps[0].subject: ")


def test_consistency_problems_are_reported_together(tmp_path: Path, templates: Path) -> None:
    """A missing template, a repeated key and a repeated day all come back in one error."""
    text = _replace_line(VALID, 8, "    template: nope.html")
    text = _replace_line(text, 9, "  - key: welcome")
    text = _replace_line(text, 10, "    day: 0")

    with pytest.raises(PlanError) as caught:
        load_plan(_write(tmp_path, text), templates)

    assert _where(caught.value.problems) == [
        (8, "steps[0].template"),
        (9, "steps[1].key"),
        (10, "steps[1].day"),
    ]
    assert len(str(caught.value).splitlines()) == 3


def test_the_shipped_thirty_day_plan_loads() -> None:
    """The plan in the repository loads: 31 steps on days 0 to 30, sent at 07:00 local time."""
    plan = load_plan(ROOT / "plans" / "thirty_day.yaml", ROOT / "templates" / "emails")

    assert len(plan.steps) == 31
    assert [step.day for step in plan.steps] == list(range(31))
    assert plan.send_time == time(7, 0)


@pytest.fixture(scope="module")
def shipped() -> Plan:
    """The repository's thirty-day plan."""
    return load_plan(ROOT / "plans" / "thirty_day.yaml", ROOT / "templates" / "emails")


@pytest.mark.parametrize(
    ("wanted", "key", "day"),
    [("3", "day03", 3), ("03", "day03", 3), ("day03", "day03", 3), ("welcome", "welcome", 0)],
)
def test_a_step_is_found_by_key_or_day_number(
    shipped: Plan, wanted: str, key: str, day: int
) -> None:
    """A step can be named by its key or by its day number."""
    step = shipped.step(wanted)

    assert step is not None
    assert (step.key, step.day) == (key, day)


@pytest.mark.parametrize("wanted", ["31", "day3", "nope", "", "-1"])
def test_an_unknown_step_is_not_found(shipped: Plan, wanted: str) -> None:
    """A key or day the plan does not have finds no step."""
    assert shipped.step(wanted) is None


def test_a_digit_like_character_finds_no_step(shipped: Plan) -> None:
    """A superscript digit is not a day number, so no step is found rather than a crash."""
    assert shipped.step("³") is None
