"""The plan's send days, per-step send times and the send window: loaded into the plan, and
every mistake reported at its file, line and field."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from campaign.domain.plan import load_plan
from campaign.domain.plan_diff import diff_plans
from campaign.domain.weekdays import EVERY_DAY
from campaign.errors import PlanError

# A valid plan; tests swap single lines (1-based) to break it.
VALID = """\
id: demo
name: "Demo plan"
send_time: "07:00"
send_window_hours: 10
send_days:
  - mon
  - tue
  - wed
  - thu
  - fri
steps:
  - key: welcome
    day: 0
    subject: "Welcome"
    template: a.html
  - key: day01
    day: 1
    subject: "Day one"
    template: a.html
    send_time: "18:30"
    send_days: [sat, sun]
"""


def _replace_line(number: int, new: str, text: str = VALID) -> str:
    lines = text.splitlines()
    lines[number - 1] = new
    return "\n".join(lines) + "\n"


def _problems(tmp_path: Path, templates: Path, text: str) -> list[str]:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path, templates)
    assert caught.value.exit_code == 2
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def test_send_days_and_step_overrides_load(tmp_path: Path, templates: Path) -> None:
    """The plan's weekdays and window, and a step's own time and days, reach the plan."""
    path = tmp_path / "plan.yaml"
    path.write_text(VALID, encoding="utf-8")

    plan = load_plan(path, templates)

    welcome, day01 = plan.steps
    assert plan.send_days == frozenset(range(5))
    assert plan.send_window == timedelta(hours=10)
    assert (plan.send_time_of(welcome), plan.send_days_of(welcome)) == (time(7), plan.send_days)
    assert (plan.send_time_of(day01), plan.send_days_of(day01)) == (time(18, 30), {5, 6})


def test_a_plan_without_the_new_keys_sends_every_day_within_twelve_hours(
    tmp_path: Path, templates: Path
) -> None:
    """Without send_days and send_window_hours a plan sends on any day, 12 hours a day."""
    text = "\n".join(line for n, line in enumerate(VALID.splitlines(), 1) if n not in range(4, 11))
    text = text.replace('    send_time: "18:30"\n    send_days: [sat, sun]', "")
    path = tmp_path / "plan.yaml"
    path.write_text(text + "\n", encoding="utf-8")

    plan = load_plan(path, templates)

    assert (plan.send_days, plan.send_window) == (EVERY_DAY, timedelta(hours=12))
    assert plan.send_days_of(plan.steps[1]) == EVERY_DAY


def test_an_unknown_weekday_is_named_at_its_line(tmp_path: Path, templates: Path) -> None:
    """A misspelt weekday is reported at its own line and index."""
    problems = _problems(tmp_path, templates, _replace_line(8, "  - fry"))

    assert problems == ["8: send_days[2]: 'fry' is not a weekday (mon..sun)"]


def test_a_capitalised_or_long_weekday_name_is_refused(tmp_path: Path, templates: Path) -> None:
    """Only the three-letter lowercase names are weekdays: `Mon` and `monday` are refused."""
    text = _replace_line(6, "  - Mon", _replace_line(7, "  - tuesday"))

    problems = _problems(tmp_path, templates, text)

    assert problems == [
        "6: send_days[0]: 'Mon' is not a weekday (mon..sun)",
        "7: send_days[1]: 'tuesday' is not a weekday (mon..sun)",
    ]


def test_an_empty_send_days_list_is_refused(tmp_path: Path, templates: Path) -> None:
    """A plan that may send on no day is an error at send_days."""
    text = VALID.replace("send_days:\n  - mon\n  - tue\n  - wed\n  - thu\n  - fri\n", "")
    text = text.replace('send_time: "07:00"\n', 'send_time: "07:00"\nsend_days: []\n')

    problems = _problems(tmp_path, templates, text)

    assert problems == [
        "4: send_days: must name at least one weekday, e.g. [mon, tue, wed, thu, fri] (got [])"
    ]


def test_a_weekday_listed_twice_is_refused(tmp_path: Path, templates: Path) -> None:
    """A repeated weekday is most likely a typo for another: reported at the repeat."""
    problems = _problems(tmp_path, templates, _replace_line(9, "  - mon"))

    assert problems == ["9: send_days[3]: 'mon' is listed twice"]


def test_send_days_as_text_asks_for_a_list(tmp_path: Path, templates: Path) -> None:
    """`send_days: mon` (not a list) says what to write instead."""
    text = VALID.replace("send_days:\n  - mon\n  - tue\n  - wed\n  - thu\n  - fri\n", "")
    text = text.replace('send_time: "07:00"\n', 'send_time: "07:00"\nsend_days: mon\n')

    problems = _problems(tmp_path, templates, text)

    assert problems == [
        "4: send_days: must be a list of weekdays, e.g. [mon, tue, wed, thu, fri] (got 'mon')"
    ]


def test_a_step_send_days_mistake_names_the_step(tmp_path: Path, templates: Path) -> None:
    """A step's own send_days are checked the same way, at the step's field."""
    problems = _problems(tmp_path, templates, _replace_line(21, "    send_days: [sat, sat]"))

    assert problems == ["21: steps[1].send_days[1]: 'sat' is listed twice"]


def test_a_step_unknown_weekday_names_the_step(tmp_path: Path, templates: Path) -> None:
    """An unknown weekday in a step's list names the step and the index."""
    problems = _problems(tmp_path, templates, _replace_line(21, "    send_days: [sat, sundy]"))

    assert problems == ["21: steps[1].send_days[1]: 'sundy' is not a weekday (mon..sun)"]


def test_a_step_send_time_must_be_a_local_time(tmp_path: Path, templates: Path) -> None:
    """A step's own send_time is checked like the plan's."""
    problems = _problems(tmp_path, templates, _replace_line(20, '    send_time: "25:00"'))

    assert problems == [
        "20: steps[1].send_time: must be a local time such as \"07:00\" (got '25:00')"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be from 1 to 24 hours (got 0)"),
        ("25", "must be from 1 to 24 hours (got 25)"),
        ('"12"', "must be a whole number (got '12')"),
    ],
)
def test_the_send_window_is_whole_hours_up_to_a_day(
    tmp_path: Path, templates: Path, value: str, message: str
) -> None:
    """send_window_hours is a whole number of hours from 1 to 24."""
    problems = _problems(tmp_path, templates, _replace_line(4, f"send_window_hours: {value}"))

    assert problems == [f"4: send_window_hours: {message}"]


def test_a_changed_window_or_step_time_shows_in_the_diff(tmp_path: Path, templates: Path) -> None:
    """plan diff names a change of the plan's days or window and of a step's own time."""
    old_path, new_path = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_path.write_text(VALID, encoding="utf-8")
    edited = _replace_line(4, "send_window_hours: 6", _replace_line(10, "  - sat"))
    new_path.write_text(_replace_line(20, '    send_time: "19:00"', edited), encoding="utf-8")

    changes = diff_plans(load_plan(old_path, templates), load_plan(new_path, templates))

    assert [(c.kind, c.key, c.detail) for c in changes] == [
        ("plan", "send_days", "Mon-Fri -> Mon-Thu, Sat"),
        ("plan", "send_window_hours", "10 -> 6"),
        ("changed", "day01", "send_time: applies to every email not yet sent"),
    ]


def test_a_changed_then_or_field_shows_in_the_diff(tmp_path: Path, templates: Path) -> None:
    """plan diff names a new `then:` and each custom field added, redeclared or removed."""
    old_path, new_path = tmp_path / "old.yaml", tmp_path / "new.yaml"
    fields = "fields:\n  side: {type: text}\n  age: {type: number}\nsteps:\n"
    old_path.write_text(VALID.replace("steps:\n", fields, 1), encoding="utf-8")
    edited = (
        "then: weekly\nfields:\n  side: {type: choice, choices: [l, r]}\n  goal: {type: text}\n"
    )
    new_path.write_text(VALID.replace("steps:\n", edited + "steps:\n", 1), encoding="utf-8")

    changes = diff_plans(load_plan(old_path, templates), load_plan(new_path, templates))

    assert [(c.kind, c.key, c.detail.split(":")[0]) for c in changes] == [
        ("plan", "then", "none -> weekly"),
        ("plan", "fields.goal", "added"),
        ("plan", "fields.age", "removed"),
        ("plan", "fields.side", "changed"),
    ]
