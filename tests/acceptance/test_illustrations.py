"""The exercise illustrations: drawn from their poses reproducibly, small, and described."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.tools import ROOT

IMAGES = ROOT / "templates" / "emails" / "images"
POSES = ROOT / "assets" / "illustrations" / "poses.yaml"
LESSONS = ROOT / "templates" / "emails"


def _manifest() -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((IMAGES / "illustrations.json").read_text())
    return data


def test_the_committed_illustrations_are_what_their_poses_draw(tmp_path: Path) -> None:
    """Redrawing every pose gives the committed SVGs, PNGs and manifest byte for byte."""
    script = ROOT / "scripts" / "build_illustrations.py"
    result = subprocess.run(
        [sys.executable, str(script), str(POSES), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = sorted(path.name for path in tmp_path.iterdir())
    committed = sorted(path.name for path in IMAGES.iterdir())
    assert built == committed, "run `make illustrations` and commit templates/emails/images"
    for name in built:
        assert (tmp_path / name).read_bytes() == (IMAGES / name).read_bytes(), name


def test_every_illustration_is_a_small_phone_sized_png_with_real_alt_text() -> None:
    """Each picture is 552x240 (1104x480 at 2x), under 40 KB, with alt naming start and end."""
    for key, entry in _manifest().items():
        one, two = IMAGES / str(entry["png"]), IMAGES / str(entry["png_2x"])
        assert one.read_bytes()[16:24] == (552).to_bytes(4, "big") + (240).to_bytes(4, "big")
        assert two.read_bytes()[16:24] == (1104).to_bytes(4, "big") + (480).to_bytes(4, "big")
        assert two.stat().st_size < 40_000, key
        alt = str(entry["alt"])
        assert len(alt) > 60, key
        assert ("Start:" in alt and "End:" in alt) or ("Left:" in alt and "Right:" in alt), key


def test_every_exercise_lesson_shows_its_illustration_right_after_its_heading() -> None:
    """Each lesson with a physical exercise calls illustration() with a known key after its h2."""
    keys = _manifest()
    illustrated = []
    for lesson in sorted(LESSONS.glob("day*.html")):
        lines = lesson.read_text().splitlines()
        for number, line in enumerate(lines):
            found = re.fullmatch(r'\{\{ illustration\("([a-z0-9-]+)"\) \}\}', line)
            if found:
                assert found.group(1) in keys, f"{lesson.name}: {found.group(1)}"
                assert lines[number - 1].startswith("<h2>Today's exercise:"), lesson.name
                illustrated.append(lesson.stem)
    assert len(illustrated) == 24, illustrated
