"""The wheel installs what a service needs: built from this checkout, installed into a fresh
venv outside the repository, and run from another folder (signup, welcome, a day's pass).

The venv is a plain `python -m venv` (no system site-packages, no PYTHONPATH): the wheel and
its dependencies are installed by pip the ordinary way, from the package indexes pip is
configured with (here the machine's local mirror), so nothing leaks in from the repository's
own .venv. Building uses pip's build isolation for the same reason (the build backend named in
pyproject.toml, not whatever setuptools the .venv holds)."""

from __future__ import annotations

import os
import subprocess
import sys
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from campaign.settings import Settings
from tests.conftest import ROOT

SUBSCRIBED_AT = "2026-12-01T07:00:00+00:00"
NEXT_DAY = "2026-12-02T12:00:00+00:00"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with the wheel of this checkout installed."""
    where = tmp_path_factory.mktemp("install")
    wheels = where / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        timeout=300,
        env=_clean_environment(),
    )
    [wheel] = wheels.glob("campaign_engine-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=600,
        env=_clean_environment(),
    )
    return venv / "bin"


def _clean_environment(**more: str) -> dict[str, str]:
    """The process environment without the engine's settings, PYTHONPATH or the .venv."""
    settings = {name.upper() for name in Settings.model_fields}
    dropped = settings | {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in dropped} | more


def _campaign(bin_dir: Path, cwd: Path, *args: str, **env: str) -> str:
    done = subprocess.run(
        [str(bin_dir / "campaign"), *args],
        cwd=cwd,
        env=_clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _subjects(outbox: Path) -> list[str]:
    return sorted(
        str(make_header(decode_header(message_from_bytes(eml.read_bytes())["Subject"])))
        for eml in outbox.glob("*.eml")
    )


def test_the_installed_package_runs_a_signup_and_a_day_from_another_folder(
    installed: Path, tmp_path: Path
) -> None:
    """From folders with no plan, templates or ebook: `db upgrade` and `subscribe` with
    CAMPAIGN_HOME set from elsewhere, then `campaign run --once` inside that folder sends the
    welcome (with the packaged ebook) to its outbox, and a day later day 1."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    located = subprocess.run(
        [str(installed / "python"), "-c", "import campaign; print(campaign.__file__)"],
        cwd=elsewhere,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not Path(located.strip()).is_relative_to(ROOT)

    at_home = {"CAMPAIGN_HOME": str(home)}
    _campaign(installed, elsewhere, "db", "upgrade", **at_home)
    assert (home / "campaign.db").is_file()
    _campaign(
        installed, elsewhere, "subscribe", "ann@example.org", "--now", SUBSCRIBED_AT, **at_home
    )

    log = _campaign(installed, home, "run", "--once", "--now", SUBSCRIBED_AT)
    assert "POSTAL_ADDRESS is not set" in log  # the dev sink's placeholder, said once
    [welcome] = list((home / "outbox").glob("*.eml"))
    assert b"concepts-of-self-healing.pdf" in welcome.read_bytes()

    _campaign(installed, home, "run", "--once", "--now", NEXT_DAY)
    assert _subjects(home / "outbox") == [
        "Why your upper back hurts (mostly good news)",
        "Your free ebook is here: Concepts of Self Healing",
    ]
    assert not list(elsewhere.iterdir())
