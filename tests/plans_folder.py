"""A folder of two plans for tests: the shipped thirty-day plan and a short knee plan."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT

THIRTY = "thirty-day-self-healing"

KNEE = """\
id: knee
name: "Five days for your knees"
send_time: "09:00"
ebook:
  title: "Knees"
  file: ../assets/concepts-of-self-healing.pdf
steps:
  - key: welcome
    day: 0
    subject: "Your knee plan starts today"
    template: welcome.html
  - key: day01
    day: 1
    subject: "Knees, lesson one"
    template: day01.html
  - key: day02
    day: 2
    subject: "Knees, lesson two"
    template: day02.html
"""


def plans_folder(tmp_path: Path, **extra: str) -> Path:
    """A folder of plans: the shipped thirty-day plan, the knee plan and `extra` files."""
    folder = tmp_path / "plans"
    folder.mkdir()
    shutil.copy(ROOT / "plans" / "thirty_day.yaml", folder / "thirty_day.yaml")
    shutil.copy(ROOT / "plans" / "weekly.yaml", folder / "weekly.yaml")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    (folder / "knee.yaml").write_text(KNEE)
    for name, text in extra.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder
