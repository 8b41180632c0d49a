"""Send windows at the command line, as a marketer runs it: `plan check` refuses each new key's
mistakes with file:line:field and exit 2, and `simulate` shows the steps send_days moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import run_campaign

WEEKDAYS = "send_days: [mon, tue, wed, thu, fri]\n"


def _plan(tmp_path: Path, plan_keys: str, step_keys: str = "") -> tuple[Path, str]:
    """A copy of the shipped plan with `plan_keys` before its steps and `step_keys` in day 2."""
    (tmp_path / "plans").mkdir(exist_ok=True)
    if not (tmp_path / "assets").exists():
        (tmp_path / "assets").symlink_to(ROOT / "assets")
    text = (ROOT / "plans" / "thirty_day.yaml").read_text()
    text = text.replace("steps:\n", f"{plan_keys}steps:\n", 1)
    text = text.replace("  - key: day02\n", f"  - key: day02\n{step_keys}", 1)
    path = tmp_path / "plans" / "windows.yaml"
    path.write_text(text)
    return path, text


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.parametrize(
    ("plan_keys", "step_keys", "bad", "expected"),
    [
        ("send_days: [mon, fry]\n", "", "fry", "send_days[1]: 'fry' is not a weekday (mon..sun)"),
        ("send_days: []\n", "", "send_days", "send_days: must name at least one weekday"),
        ("send_days: [mon, mon]\n", "", "mon, mon", "send_days[1]: 'mon' is listed twice"),
        ("send_window_hours: 0\n", "", "send_window", "send_window_hours: must be from 1 to 24"),
        (
            "",
            '    send_time: "7am"\n',
            "7am",
            'steps[2].send_time: must be a local time such as "07:00"',
        ),
        (
            "",
            "    send_days: [sat, sunday]\n",
            "sunday",
            "steps[2].send_days[1]: 'sunday' is not a weekday",
        ),
    ],
    ids=["unknown-day", "no-day", "repeated-day", "window", "step-time", "step-day"],
)
def test_plan_check_names_each_send_window_mistake_and_exits_2(
    env: dict[str, str], tmp_path: Path, plan_keys: str, step_keys: str, bad: str, expected: str
) -> None:
    """Each mistake in the new keys is one line, file:line: field: problem, and exit code 2."""
    path, text = _plan(tmp_path, plan_keys, step_keys)

    done = run_campaign(env, tmp_path, "plan", "check", str(path))

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"{path}:{_line(text, bad)}: {expected}" in done.stderr


def test_plan_check_accepts_send_days_and_simulate_marks_the_moved_steps(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A weekday plan checks clean; simulate's JSON gives each moved step its own date, and
    its table the weekday and a `moved from` note."""
    path, _ = _plan(tmp_path, WEEKDAYS + "send_window_hours: 10\n")
    environ = {**env, "PLAN_PATH": str(path), "COLUMNS": "250"}
    checked = run_campaign(environ, tmp_path, "plan", "check")
    assert checked.returncode == 0, checked.stderr
    assert "sent at 07:00 local time, Mon-Fri" in checked.stdout

    args = ["simulate", "--start", "2026-12-04T17:00:00Z", "--timezone", "America/New_York"]
    done = run_campaign(environ, tmp_path, *args, "--days", "3", "--format", "json")
    table = run_campaign(environ, tmp_path, *args, "--days", "3")

    assert done.returncode == 0, done.stderr
    rows = [(r["step"], r["local"], r["moved_from"]) for r in json.loads(done.stdout)]
    assert rows == [
        ("welcome", "2026-12-04T12:00:00-05:00", None),
        ("day01", "2026-12-07T07:00:00-05:00", "2026-12-05"),
        ("day02", "2026-12-08T07:00:00-05:00", "2026-12-06"),
        ("day03", "2026-12-09T07:00:00-05:00", "2026-12-07"),
    ]
    assert table.returncode == 0, table.stderr
    assert "Mon 2026-12-07 07:00 EST (moved from Sat 5 Dec)" in table.stdout
    assert "07:00-17:00 window" in table.stdout
