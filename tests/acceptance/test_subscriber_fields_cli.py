"""Custom subscriber fields through the real `campaign` command: `plan vars` lists them with
their defaults, `plan check` catches bad declarations and unknown names, `subscribe --field`,
`import`, `export` and `forget` carry them, `fields` shows and changes them (exit 2 for a bad
value or an undeclared field)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from campaign.people import operators
from campaign.storage.db import Database
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


def test_fields_shows_sets_and_clears_a_subscribers_values(
    env: dict[str, str], content: dict[str, str], tmp_path: Path
) -> None:
    """`campaign fields EMAIL` lists every declared field (a default marked so); --set and
    --clear change them all or nothing (exit 2 naming the bad value, the unknown field or the
    unknown address); each change is audited without the value."""
    both = {**env, **content}
    assert run_campaign(both, tmp_path, "db", "upgrade").returncode == 0
    added = run_campaign(both, tmp_path, "subscribe", "a@example.org", "--field", "desk_hours=8")
    assert added.returncode == 0, added.stderr

    def show() -> str:
        shown = run_campaign(both, tmp_path, "fields", "A@example.org")
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    assert show() == 'desk_hours = 8\npain_area = "upper-back"  (default)\n'
    changed = run_campaign(
        both,
        tmp_path,
        "fields",
        "a@example.org",
        "--set",
        "pain_area=knee",
        "--clear",
        "desk_hours",
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == 'desk_hours = 0  (default)\npain_area = "knee"\n'
    for args, words in (
        (("--set", "pain_area=neck", "--set", "desk_hours=99"), "'99' is more than 24"),
        (("--set", "pain_area=neck", "--set", "shoe=4"), "unknown field 'shoe'"),
        (("--set", "pain_area"), "NAME=VALUE"),
        (("--set", "pain_area=neck", "--clear", "pain_area"), "also in --set"),
    ):
        refused = run_campaign(both, tmp_path, "fields", "a@example.org", *args)
        assert refused.returncode == 2, args
        assert words in refused.stderr, (args, refused.stderr)
    as_json = run_campaign(both, tmp_path, "fields", "a@example.org", "--json")
    assert json.loads(as_json.stdout) == {"pain_area": "knee"}  # the refused ones left no trace
    plan = Path(content["PLAN_PATH"])  # an edit takes the stored choice away
    plan.write_text(plan.read_text().replace("low-back, knee]", "low-back]"))
    assert show() == (
        'desk_hours = 0  (default)\npain_area = "upper-back"  '
        '(default: the stored "knee" no longer fits the field)\n'
    )
    nobody = run_campaign(both, tmp_path, "fields", "zed@example.org", "--set", "pain_area=neck")
    assert nobody.returncode == 2
    assert "zed@example.org" in nobody.stderr
    db = Database(env["DATABASE_URL"])
    try:
        page = operators.audit_log(db, limit=10)
    finally:
        db.dispose()
    assert [(e.actor, e.action, e.detail) for e in page.entries] == [
        ("command line", "subscriber.fields", "#1 (desk_hours, pain_area)")
    ]
