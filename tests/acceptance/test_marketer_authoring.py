"""Marketers writing a plan: `plan new` scaffolds one, `plan vars` lists what templates may use,
`plan check` catches what renders but is wrong, and the confirmation email can be looked at."""

from __future__ import annotations

import json
import shutil
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from jinja2 import Environment, meta, nodes

from tests.helpers import run_campaign
from tests.smtp_server import SMTPServer
from tests.tools import ROOT

NOW = "2026-12-01T07:00:00+00:00"
SECRET = "test-secret-key-that-is-long-enough-0123456789"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No database, no mail server: what `plan` commands and `preview` need."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "PUBLIC_BASE_URL": "https://news.example.org",
        "SECRET_KEY": SECRET,
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        **extra,
    }


@pytest.fixture
def shipped(tmp_path: Path) -> dict[str, str]:
    """A copy of the shipped plan, templates and ebook that a test may edit."""
    for folder in ("plans", "templates", "assets"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return _env(
        tmp_path,
        PLAN_PATH=str(tmp_path / "plans" / "thirty_day.yaml"),
        TEMPLATES_DIR=str(tmp_path / "templates" / "emails"),
    )


def test_plan_new_scaffolds_a_plan_that_passes_check_and_previews(tmp_path: Path) -> None:
    """`plan new knee` in a fresh CAMPAIGN_HOME writes a plan and templates that check and render;
    a second run refuses to overwrite (exit 2 naming the file), and a bad NAME is refused."""
    home = tmp_path / "home"
    home.mkdir()
    env = _env(tmp_path, CAMPAIGN_HOME=str(home))
    made = run_campaign(env, home, "plan", "new", "knee")
    assert made.returncode == 0, made.stderr
    plan = home / "plans" / "knee.yaml"
    assert f"wrote {plan}" in made.stdout
    assert (home / "templates" / "emails" / "knee" / "day02.html").is_file()

    checked = run_campaign(env, home, "plan", "check", str(plan))
    assert checked.returncode == 0, checked.stderr
    assert "3 steps, days 0-2" in checked.stdout
    # The home's new templates folder now stands for the packaged one: the shipped plan, still
    # the one PLAN_PATH names, keeps every template it needs.
    shipped_plan = run_campaign(env, home, "plan", "check")
    assert shipped_plan.returncode == 0, shipped_plan.stdout + shipped_plan.stderr
    assert "ok: 31 steps" in shipped_plan.stdout

    with_plan = {**env, "PLAN_PATH": str(plan)}
    day1 = run_campaign(with_plan, home, "preview", "day01", "--format", "text", "--now", NOW)
    assert day1.returncode == 0, day1.stderr
    assert "Day 1 of 2" in day1.stdout
    assert "Hi Ann," in day1.stdout
    confirm = run_campaign(with_plan, home, "preview", "--confirmation", "--format", "text")
    assert confirm.returncode == 0, confirm.stderr
    assert "<https://news.example.org/confirm/" in confirm.stdout

    listed = run_campaign(with_plan, home, "plan", "vars")
    assert listed.returncode == 0, listed.stderr
    assert "{{ subscriber.first_name }}" in listed.stdout
    assert "'knee'" in listed.stdout  # plan.id's example, from this plan

    again = run_campaign(env, home, "plan", "new", "knee")
    assert again.returncode == 2
    assert f"{plan} already exists" in again.stderr
    bad = run_campaign(env, home, "plan", "new", "Knee Plan")
    assert bad.returncode == 2
    assert "NAME 'Knee Plan'" in bad.stderr


def _variables(env: dict[str, str], cwd: Path) -> list[dict[str, object]]:
    done = run_campaign(env, cwd, "plan", "vars", "--json", "--now", NOW)
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, object]] = json.loads(done.stdout)
    return listed


def _append_to_block(template: Path, lines: list[str]) -> None:
    text = template.read_text()
    template.write_text(text.replace("{% endblock %}", "\n".join(lines) + "\n{% endblock %}", 1))


def test_plan_vars_lists_every_variable_and_each_renders_its_example(
    shipped: dict[str, str], tmp_path: Path
) -> None:
    """Every variable `plan vars` lists renders to its example in a real preview, and plan check
    passes with all of them in use."""
    listed = _variables(shipped, tmp_path)
    names = {str(v["name"]) for v in listed}
    assert {"subscriber.first_name", "unsubscribe_url", "plan.total_days", "confirm_url"} <= names
    templates = tmp_path / "templates" / "emails"
    everywhere = [v for v in listed if v["where"] == "every email"]
    confirm_only = [v for v in listed if v["where"] != "every email"]
    _append_to_block(
        templates / "welcome.html",
        [f"<p>{v['name']}={{{{ {v['name']} }}}}</p>" for v in everywhere],
    )
    _append_to_block(
        templates / "confirm.html",
        [f"<p>{v['name']}={{{{ {v['name']} }}}}</p>" for v in confirm_only],
    )
    assert run_campaign(shipped, tmp_path, "plan", "check").returncode == 0
    welcome = run_campaign(
        shipped, tmp_path, "preview", "welcome", "--format", "text", "--now", NOW
    )
    assert welcome.returncode == 0, welcome.stderr
    confirm = run_campaign(
        shipped, tmp_path, "preview", "--confirmation", "--format", "text", "--now", NOW
    )
    assert confirm.returncode == 0, confirm.stderr
    for variable, shown in [(v, welcome.stdout) for v in everywhere] + [
        (v, confirm.stdout) for v in confirm_only
    ]:
        assert f"{variable['name']}={variable['example']}" in shown, variable


def _used_names(source: str, environment: Environment) -> set[str]:
    """`name` and `name.attribute` for every variable a template reads."""
    tree = environment.parse(source)
    used = set(meta.find_undeclared_variables(tree))
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            used.add(f"{node.node.name}.{node.attr}")
    return used


def test_plan_vars_misses_nothing_the_shipped_templates_use(
    shipped: dict[str, str], tmp_path: Path
) -> None:
    """Every variable the shipped templates and subjects read is listed by `plan vars`."""
    listed = {str(v["name"]) for v in _variables(shipped, tmp_path)}
    prefixes = {name.split(".")[0] for name in listed}
    environment = Environment(autoescape=True)
    sources = [path.read_text() for path in (ROOT / "templates" / "emails").glob("*.html")]
    sources.append((ROOT / "plans" / "thirty_day.yaml").read_text())
    used = set().union(*(_used_names(source, environment) for source in sources))
    assert used, "the shipped templates read variables"
    # What one template sets for another (a lesson's `purpose`, read by base.html) is no
    # variable of the renderer's.
    declared = {
        node.name
        for source in sources
        for node in environment.parse(source).find_all(nodes.Name)
        if node.ctx in ("store", "param")
    }
    functions = {"illustration"}  # a function templates call, documented beside the names
    missing = {
        name
        for name in used
        if name not in listed
        and name not in prefixes
        and name.split(".")[0] not in declared | functions
    }
    assert not missing


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _edit_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


CASES = {
    "unknown block": (
        "day03.html",
        3,
        "{% block contnet %}",
        "unknown block 'contnet': base.html defines action, content, greeting, invite, topline; "
        "did you mean 'content'?",
    ),
    "empty template": ("day04.html", None, "", "the template is empty"),
    "relative link": (
        "day05.html",
        4,
        '<p>More: <a href="/knees">the knee article</a></p>',
        "relative link in href: /knees; emails need an absolute URL",
    ),
    "variable yielding a relative link": (
        "day06.html",
        4,
        '<p><img src="{{ step.key }}.png" alt="chart"></p>',
        "relative link in src: {{ step.key }}.png (gives 'day06.png')",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_check_reports_a_template_mistake_at_its_file_and_line(
    case: str, shipped: dict[str, str], tmp_path: Path
) -> None:
    """Each mistake that still renders exits 2 naming the plan line, the step and template:line."""
    name, line, new, message = CASES[case]
    template = tmp_path / "templates" / "emails" / name
    if line is None:
        template.write_text("\n")
    else:
        _edit_line(template, line, new)
    done = run_campaign(shipped, tmp_path, "plan", "check")
    assert done.returncode == 2
    plan = Path(shipped["PLAN_PATH"])
    plan_line = _line_of(plan, f"template: {name}")
    step = int(name[3:5])
    assert f"{plan}:{plan_line}: steps[{step}].template: {template}:{line or 1}: {message}" in (
        done.stderr
    )
    assert "error: the plan has 1 problem(s)" in done.stderr


def test_plan_check_reports_a_day_beyond_the_plans_length(
    shipped: dict[str, str], tmp_path: Path
) -> None:
    """With `length_days: 29`, the day-30 step is reported at its own line and field."""
    plan = Path(shipped["PLAN_PATH"])
    plan.write_text(
        plan.read_text().replace('send_time: "07:00"\n', 'send_time: "07:00"\nlength_days: 29\n')
    )
    done = run_campaign(shipped, tmp_path, "plan", "check")
    assert done.returncode == 2
    lines = plan.read_text().splitlines()
    day30 = next(i for i, text in enumerate(lines, 1) if text.strip() == "day: 30")
    assert (
        f"{plan}:{day30}: steps[30].day: day 30 is beyond the plan's length (length_days: 29)"
        in (done.stderr)
    )
    assert "error: the plan has 1 problem(s)" in done.stderr


def test_the_confirmation_email_previews_and_sends_as_a_test(
    shipped: dict[str, str], smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """`preview --confirmation` shows the double opt-in email with its link; `send-test
    --confirmation` delivers it over SMTP, built by the composer the real one goes through."""
    shown = run_campaign(shipped, tmp_path, "preview", "--confirmation", "--now", NOW)
    assert shown.returncode == 0, shown.stderr
    assert "One click to start your 30-day plan" in shown.stdout
    assert 'href="https://news.example.org/confirm/' in shown.stdout
    smtp = {
        **shipped,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
        "POSTAL_ADDRESS": "Pain & Injury Doctor, 1 Test Street, Testville",
    }
    sent = run_campaign(smtp, tmp_path, "send-test", "--confirmation", "--to", "review@example.org")
    assert sent.returncode == 0, sent.stderr
    (received,) = smtp_server.to("review@example.org")
    message: Message = message_from_bytes(received.data)
    assert (
        message["Subject"] == "[TEST confirmation] Please confirm your email to get your free ebook"
    )
    assert message["X-Campaign-Step"] == "thirty-day-self-healing/confirmation"
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    body = html.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b'href="https://news.example.org/confirm/' in body
    both = run_campaign(smtp, tmp_path, "send-test", "welcome", "--confirmation", "--to", "a@b.org")
    assert both.returncode == 2
