"""`campaign plan new NAME`: a small plan that passes `plan check`, with its templates.

Three steps (a welcome at signup, day 1 and day 2) and a double opt-in email, each template
extending the shipped `base.html` and filling its `content` block."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from campaign.errors import BadInput

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

_PLAN = """\
# {name}: scaffolded by `campaign plan new`. Edit subjects here and lessons in
# {templates}/. Run `campaign plan check {plan}` after every edit.
id: {name}
name: "{title}"
send_time: "07:00"
# How many days the plan runs: no step may come later (`plan check` says so).
length_days: 2
confirmation:
  subject: "Please confirm your email"
  preheader: "One click and your first email is on its way."
  template: {name}/confirm.html
steps:
  - key: welcome
    day: 0
    subject: "Welcome, {{{{ subscriber.name }}}}"
    preheader: "What the next two days hold."
    template: {name}/welcome.html
  - key: day01
    day: 1
    subject: "Day 1: the first lesson"
    preheader: "One idea and one small step."
    template: {name}/day01.html
  - key: day02
    day: 2
    subject: "Day 2: keeping it up"
    preheader: "What to do next."
    template: {name}/day02.html
"""

_TEMPLATES = {
    "confirm.html": """\
{% extends "base.html" %}
{% block content %}
<h1>One click to start</h1>
<p>Please confirm that this is your email address.</p>
<p><a href="{{ confirm_url }}">Yes, confirm my email address</a></p>
<p>If you did not sign up, ignore this email and you will not hear from us again.</p>
{% endblock %}
""",
    "welcome.html": """\
{% extends "base.html" %}
{% block content %}
<h1>Welcome to {{ plan.name }}</h1>
<p>Your first lesson arrives tomorrow morning.</p>
<p>Please add <strong>{{ sender_address }}</strong> to your contacts.</p>
{% endblock %}
""",
    "day01.html": """\
{% extends "base.html" %}
{% block content %}
<h1>Day {{ day }}: the first lesson</h1>
<p>Write the lesson here. Links must be absolute, for example
<a href="{{ public_base_url }}/">our website</a>.</p>
{% endblock %}
""",
    "day02.html": """\
{% extends "base.html" %}
{% block content %}
<h1>Day {{ day }} of {{ plan.total_days }}: keeping it up</h1>
<p>Write the lesson here.</p>
{% endblock %}
""",
}


@dataclass(frozen=True)
class Scaffold:
    plan: Path
    templates: tuple[Path, ...]


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(
            f"NAME {name!r}: must be lowercase letters, digits, - or _, starting with a letter"
            " or digit (it becomes the plan's id and file name)"
        )
    return name


def scaffold(name: str, plans_dir: Path, templates_dir: Path, base: Path) -> Scaffold:
    """Write `plans_dir/NAME.yaml` and `templates_dir/NAME/*.html` (and `base.html` from
    `base` if the templates folder has none); BadInput naming the first file that exists."""
    check_name(name)
    plan = plans_dir / f"{name}.yaml"
    folder = templates_dir / name
    files = [plan, *(folder / file for file in _TEMPLATES)]
    for path in files:
        if path.exists():
            raise BadInput(f"{path} already exists; pick another NAME or move it away")
    written: list[Path] = []
    if not (templates_dir / "base.html").exists():
        templates_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, templates_dir / "base.html")
        written.append(templates_dir / "base.html")
    plans_dir.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    title = name.replace("-", " ").replace("_", " ").capitalize()
    shown = str(templates_dir / name)
    plan.write_text(_PLAN.format(name=name, title=title, templates=shown, plan=plan))
    for file, text in _TEMPLATES.items():
        (folder / file).write_text(text)
        written.append(folder / file)
    return Scaffold(plan, tuple(written))
