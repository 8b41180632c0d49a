"""Custom subscriber fields through the real `campaign` command: `plan vars` lists them with
their defaults, `plan check` catches bad declarations and unknown names, `subscribe --field`,
`import`, `export` and `forget` carry them (exit 2 for a bad value or an undeclared field)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_campaign
from tests.tools import ROOT

NOW = "2026-12-01T07:00:00+00:00"
FIELDS = """\
fields:
  pain_area:
    type: choice
    choices: [upper-back, neck, low-back, knee]
    default: upper-back
  desk_hours: {type: number, default: 0, min: 0, max: 24}
"""


@pytest.fixture
def content(tmp_path: Path) -> dict[str, str]:
    """A copy of the shipped plan declaring two fields, and its templates and ebook."""
    for folder in ("plans", "templates", "assets"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    plan = tmp_path / "plans" / "thirty_day.yaml"
    plan.write_text(plan.read_text().replace("steps:\n", FIELDS + "steps:\n", 1))
    return {
        "PLAN_PATH": str(plan),
        "TEMPLATES_DIR": str(tmp_path / "templates" / "emails"),
        "OUTBOX_DIR": str(tmp_path / "outbox"),
    }


def _use_in_welcome(tmp_path: Path, line: str) -> None:
    welcome = tmp_path / "templates" / "emails" / "welcome.html"
    text = welcome.read_text()
    welcome.write_text(text.replace("{% endblock %}", line + "\n{% endblock %}", 1))


def test_plan_vars_lists_each_field_with_its_default_and_preview_shows_it(
    env: dict[str, str], content: dict[str, str], tmp_path: Path
) -> None:
    """`subscriber.fields.NAME` is listed with the default as its example, and renders so."""
    both = {**env, **content}
    listed = run_campaign(both, tmp_path, "plan", "vars", "--json")
    assert listed.returncode == 0, listed.stderr
    examples = {v["name"]: v["example"] for v in json.loads(listed.stdout)}
    assert examples["subscriber.fields.pain_area"] == "upper-back"
    assert examples["subscriber.fields.desk_hours"] == 0
    _use_in_welcome(tmp_path, "<p>area={{ subscriber.fields.pain_area }}</p>")
    assert run_campaign(both, tmp_path, "plan", "check").returncode == 0
    shown = run_campaign(both, tmp_path, "preview", "welcome", "--format", "text", "--now", NOW)
    assert shown.returncode == 0, shown.stderr
    assert "area=upper-back" in shown.stdout


def test_plan_check_names_an_unknown_field_and_a_bad_declaration(
    env: dict[str, str], content: dict[str, str], tmp_path: Path
) -> None:
    """A misspelt field in a template is reported at the template's line; a default that is
    not one of the choices at the plan's file:line:field."""
    both = {**env, **content}
    _use_in_welcome(tmp_path, "<p>{{ subscriber.fields.pain_aera }}</p>")
    checked = run_campaign(both, tmp_path, "plan", "check")
    assert checked.returncode == 2
    assert "welcome.html:" in checked.stderr
    assert "pain_aera" in checked.stderr
    plan = Path(content["PLAN_PATH"])
    text = plan.read_text().replace("default: upper-back", "default: shoulder")
    plan.write_text(text)
    line = text.splitlines().index("    default: shoulder") + 1
    checked = run_campaign(both, tmp_path, "plan", "check")
    assert checked.returncode == 2
    assert (
        f"{plan}:{line}: fields.pain_area.default: 'shoulder' is not one of upper-back, neck, "
        "low-back, knee"
    ) in checked.stderr


def test_subscribe_import_export_and_forget_carry_the_fields(
    env: dict[str, str], content: dict[str, str], tmp_path: Path
) -> None:
    """`--field` fills a field (exit 2 naming a bad value or an undeclared field); `import`
    reads field columns; `export` shows the values; `forget` erases them."""
    both = {**env, **content}
    assert run_campaign(both, tmp_path, "db", "upgrade").returncode == 0
    bad = run_campaign(both, tmp_path, "subscribe", "a@example.org", "--field", "desk_hours=30")
    assert bad.returncode == 2
    assert "field 'desk_hours': '30' is more than 24" in bad.stderr
    unknown = run_campaign(both, tmp_path, "subscribe", "a@example.org", "--field", "shoe=4")
    assert unknown.returncode == 2
    assert "unknown field 'shoe'" in unknown.stderr
    malformed = run_campaign(both, tmp_path, "subscribe", "a@example.org", "--field", "shoe")
    assert malformed.returncode == 2
    assert "NAME=VALUE" in malformed.stderr
    good = run_campaign(
        both,
        tmp_path,
        "subscribe",
        "a@example.org",
        "--field",
        "desk_hours=8",
        "--field",
        "pain_area=neck",
    )
    assert good.returncode == 0, good.stderr
    csv = tmp_path / "list.csv"
    csv.write_text("email,pain_area\nb@example.org,knee\nc@example.org,elbow\n")
    imported = run_campaign(both, tmp_path, "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    assert "added 1" in imported.stdout
    assert f"{csv}:3: skipped: field 'pain_area': 'elbow' is not one of" in imported.stderr
    for email, fields in (
        ("a@example.org", {"desk_hours": 8, "pain_area": "neck"}),
        ("b@example.org", {"pain_area": "knee"}),
    ):
        exported = run_campaign(both, tmp_path, "export", email)
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["subscriber"]["fields"] == fields
    assert run_campaign(both, tmp_path, "forget", "a@example.org").returncode == 0
    gone = run_campaign(both, tmp_path, "export", "a@example.org")
    assert gone.returncode == 2
