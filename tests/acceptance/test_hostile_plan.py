"""A hostile plan as its user meets it: `campaign plan check` exits 2 naming file and line, and
the web's /ebook/ route publishes the confined ebook or nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from campaign.content.compose import Recipient
from campaign.engine import App
from campaign.errors import RenderError
from campaign.interfaces.web import create_app
from tests.acceptance.conftest import NOW
from tests.conftest import EngineFactory
from tests.tools import ROOT

CAMPAIGN = [sys.executable, "-m", "campaign"]
BOOK = "concepts-of-self-healing.pdf"


def _plan_check(plan: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`campaign plan check PLAN` with the shipped templates; never more than 60 s."""
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        "SECRET_KEY": "a-real-production-secret-key-0123456789abcdef",
    }
    return subprocess.run(
        [*CAMPAIGN, "plan", "check", str(plan)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _shipped_with(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the shipped plan with its first `old` line replaced; the line's number."""
    (tmp_path / "plans").mkdir(exist_ok=True)
    if not (tmp_path / "assets").exists():
        (tmp_path / "assets").symlink_to(ROOT / "assets")
    lines = (ROOT / "plans" / "thirty_day.yaml").read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if old in line)
    lines[number] = lines[number].replace(old, new)
    path = tmp_path / "plans" / "edited.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, number + 1


def test_a_subject_that_runs_a_command_fails_plan_check_at_its_line(tmp_path: Path) -> None:
    """An SSTI payload in a subject exits 2 at `file:line: steps[1].subject`, and never runs."""
    payload = "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}"
    plan, line = _shipped_with(
        tmp_path, '"Why your upper back hurts (mostly good news)"', f'"{payload}"'
    )

    result = _plan_check(plan, tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"edited.yaml:{line}: steps[1].subject:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_an_attachment_of_a_system_file_fails_plan_check_at_its_line(tmp_path: Path) -> None:
    """`attachments: [/etc/passwd]` exits 2 at its line, as an escape from the content folders."""
    plan, line = _shipped_with(
        tmp_path,
        "    template: day01.html",
        "    template: day01.html\n    attachments: [/etc/passwd]",
    )

    result = _plan_check(plan, tmp_path)

    assert result.returncode == 2
    assert f"edited.yaml:{line + 1}: steps[1].attachments[0]:" in result.stderr
    assert "outside the content folders" in result.stderr


def test_a_billion_laughs_plan_fails_plan_check_quickly(tmp_path: Path) -> None:
    """Nine levels of ten aliases end in exit 2 with the line, well within the time limit."""
    laughs = ['a0: &a0 ["lol"]'] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)
    ]
    plan = tmp_path / "laughs.yaml"
    plan.write_text("\n".join(laughs) + "\n" + (ROOT / "plans" / "thirty_day.yaml").read_text())

    result = _plan_check(plan, tmp_path)

    assert result.returncode == 2
    assert "laughs.yaml:" in result.stderr
    assert "expands to more than" in result.stderr


def _get(app: App, path: str) -> httpx.Response:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(fetch())


@pytest.fixture
def own_assets(tmp_path: Path) -> Path:
    """A plan copy whose ebook is a symlink, inside its own assets folder, to a real PDF."""
    (tmp_path / "plans").mkdir()
    shutil.copy(ROOT / "plans" / "thirty_day.yaml", tmp_path / "plans" / "thirty_day.yaml")
    (tmp_path / "assets").mkdir()
    shutil.copy(ROOT / "assets" / BOOK, tmp_path / "assets" / "real.pdf")
    (tmp_path / "assets" / BOOK).symlink_to(tmp_path / "assets" / "real.pdf")
    (tmp_path / "secret.env").write_text("SECRET_KEY=hunter2\n")
    return tmp_path


def test_the_ebook_route_serves_only_the_confined_file(
    engine: EngineFactory, own_assets: Path
) -> None:
    """/ebook/ gives the plan's PDF; once its symlink points out of the content folders, 404."""
    app, _ = engine(NOW, PLAN_PATH=str(own_assets / "plans" / "thirty_day.yaml"))
    book = own_assets / "assets" / BOOK

    served = _get(app, f"/ebook/{BOOK}")
    book.unlink()
    book.symlink_to(own_assets / "secret.env")  # swapped after the plan loaded
    swapped = _get(app, f"/ebook/{BOOK}")

    assert served.status_code == 200
    assert served.content == (ROOT / "assets" / BOOK).read_bytes()
    assert swapped.status_code == 404
    assert b"hunter2" not in swapped.content
    for other in ("real.pdf", "..%2Fsecret.env", "%2Fetc%2Fpasswd", "thirty_day.yaml"):
        assert _get(app, f"/ebook/{other}").status_code == 404


def test_an_attachment_swapped_for_a_symlink_out_is_not_mailed(
    engine: EngineFactory, own_assets: Path
) -> None:
    """The welcome email refuses to attach an ebook whose symlink now points out of bounds."""
    app, _ = engine(NOW, PLAN_PATH=str(own_assets / "plans" / "thirty_day.yaml"))
    book = own_assets / "assets" / BOOK
    book.unlink()
    book.symlink_to(own_assets / "secret.env")
    welcome = app.plan.steps[0]

    with pytest.raises(RenderError) as caught:
        app.composer.compose(
            welcome, Recipient(1, "ann@example.org", "Ann"), message_id="<x@y>", now=NOW
        )

    assert "outside the content folders" in str(caught.value)
