"""With SMTP_HOST set, the shipped placeholders are refused by name; risky but working settings
are said once at start; relative paths come from CAMPAIGN_HOME or fall back to the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from campaign.errors import ConfigError
from campaign.settings import (
    PACKAGED_DEFAULTS,
    PLACEHOLDER_POSTAL_ADDRESS,
    SHIPPED_MAIL_FROM,
    Settings,
)
from tests.conftest import ROOT

PRODUCTION = {
    "SMTP_HOST": "smtp.example.org",
    "SECRET_KEY": "a-real-secret-key-0123456789-abcdefghij",
    "MAIL_FROM": "Clinic <news@clinic.example.org>",
    "POSTAL_ADDRESS": "Clinic, 1 Real Street, Realtown",
    "PUBLIC_BASE_URL": "https://news.clinic.example.org",
}
EXAMPLE = dotenv_values(ROOT / ".env.example")


def _refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


def test_realistic_production_settings_start_without_warnings() -> None:
    """Real sender, real address, https: accepted, nothing to say."""
    assert Settings.from_env(PRODUCTION).start_warnings() == []


@pytest.mark.parametrize("mail_from", [SHIPPED_MAIL_FROM, EXAMPLE["MAIL_FROM"], None])
def test_the_shipped_sender_is_refused_with_smtp_host(mail_from: str | None) -> None:
    """MAIL_FROM as shipped in the code or in .env.example (or unset) stops start-up."""
    environ = {k: v for k, v in PRODUCTION.items() if k != "MAIL_FROM"}
    if mail_from is not None:
        environ["MAIL_FROM"] = mail_from
    error = _refused(environ)
    assert error.variable == "MAIL_FROM"
    assert error.exit_code == 2


@pytest.mark.parametrize(
    "postal", [PLACEHOLDER_POSTAL_ADDRESS, EXAMPLE["POSTAL_ADDRESS"], "", "   ", None]
)
def test_a_placeholder_or_empty_postal_address_is_refused_with_smtp_host(
    postal: str | None,
) -> None:
    """POSTAL_ADDRESS shipped, empty, blank or unset stops start-up, naming POSTAL_ADDRESS."""
    environ = {k: v for k, v in PRODUCTION.items() if k != "POSTAL_ADDRESS"}
    if postal is not None:
        environ["POSTAL_ADDRESS"] = postal
    assert _refused(environ).variable == "POSTAL_ADDRESS"


@pytest.mark.parametrize("postal", ["", "  ", None])
def test_the_dev_sink_uses_the_placeholder_address_but_says_so(postal: str | None) -> None:
    """Without SMTP_HOST an empty POSTAL_ADDRESS works on the placeholder, announced at start."""
    settings = Settings.from_env({} if postal is None else {"POSTAL_ADDRESS": postal})
    assert settings.postal_address == PLACEHOLDER_POSTAL_ADDRESS
    [warning] = settings.start_warnings()
    assert "POSTAL_ADDRESS" in warning


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("https://news.example.org", False),
        ("http://localhost:8000", False),
        ("http://127.0.0.1:8000", False),
        ("http://[::1]:8000", False),
        ("http://news.example.org", True),
        ("http://192.0.2.10:8000", True),
    ],
)
def test_a_public_base_url_not_https_nor_loopback_is_said_at_start(url: str, warned: bool) -> None:
    """Clear-text links to the world are allowed, and said once at start."""
    warnings = Settings.from_env({**PRODUCTION, "PUBLIC_BASE_URL": url}).start_warnings()
    assert any("PUBLIC_BASE_URL" in w and "https" in w for w in warnings) == warned


def test_public_base_url_follows_the_http_listener_when_unset() -> None:
    """Unset PUBLIC_BASE_URL: the HTTP host and port (localhost for loopback and 0.0.0.0)."""
    assert Settings.from_env({}).public_base_url == "http://localhost:8000"
    assert Settings.from_env({"HTTP_PORT": "8081"}).public_base_url == "http://localhost:8081"
    chosen = {"HTTP_HOST": "0.0.0.0", "HTTP_PORT": "9000"}
    assert Settings.from_env(chosen).public_base_url == "http://localhost:9000"
    chosen = {"HTTP_HOST": "192.0.2.10", "HTTP_PORT": "9000"}
    assert Settings.from_env(chosen).public_base_url == "http://192.0.2.10:9000"
    chosen = {"HTTP_PORT": "9000", "PUBLIC_BASE_URL": "https://news.example.org"}
    assert Settings.from_env(chosen).public_base_url == "https://news.example.org"


def test_relative_paths_come_from_campaign_home(tmp_path: Path) -> None:
    """With CAMPAIGN_HOME, relative paths and a relative SQLite file are taken from it;
    absolute ones stay; the default plan and templates present there are used."""
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "thirty_day.yaml").write_text("steps: []\n")
    settings = Settings.from_env(
        {
            "CAMPAIGN_HOME": str(tmp_path),
            "OUTBOX_DIR": "mail",
            "ASSETS_DIR": "/srv/assets",
            "TEMPLATES_DIR": "mine",
        }
    )
    assert settings.plan_path == tmp_path / "plans" / "thirty_day.yaml"
    assert settings.templates_dir == tmp_path / "mine"
    assert settings.outbox_dir == tmp_path / "mail"
    assert settings.assets_dir == Path("/srv/assets")
    assert settings.database_url == f"sqlite:///{tmp_path / 'campaign.db'}"
    assert settings.pages_dir == PACKAGED_DEFAULTS / "templates" / "web"
    kept = {"CAMPAIGN_HOME": str(tmp_path), "DATABASE_URL": "sqlite:////var/lib/c.db"}
    assert Settings.from_env(kept).database_url == "sqlite:////var/lib/c.db"


def test_unset_defaults_missing_from_home_fall_back_to_the_packaged_copies(tmp_path: Path) -> None:
    """An empty CAMPAIGN_HOME runs on the plan, templates and pages installed with the package;
    a PLAN_PATH that is set is never replaced."""
    settings = Settings.from_env({"CAMPAIGN_HOME": str(tmp_path)})
    assert settings.plan_path == PACKAGED_DEFAULTS / "plans" / "thirty_day.yaml"
    assert settings.plan_path.is_file()
    assert (settings.templates_dir / "welcome.html").is_file()
    assert (settings.pages_dir / "subscribe.html").is_file()
    assert (PACKAGED_DEFAULTS / "assets" / "concepts-of-self-healing.pdf").is_file()
    mine = Settings.from_env({"CAMPAIGN_HOME": str(tmp_path), "PLAN_PATH": "plans/x.yaml"})
    assert mine.plan_path == tmp_path / "plans" / "x.yaml"


def test_without_campaign_home_the_working_folder_keeps_relative_paths() -> None:
    """In the repository checkout (the tests' working folder) nothing changes."""
    settings = Settings.from_env({})
    assert settings.plan_path == Path("plans/thirty_day.yaml")
    assert settings.templates_dir == Path("templates/emails")
    assert settings.outbox_dir == Path("outbox")
    assert settings.database_url == "sqlite:///campaign.db"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, str(ROOT / "run_scheduler.py"), "--once"], id="script"),
        pytest.param([sys.executable, "-m", "campaign", "run", "--once"], id="campaign-run"),
    ],
)
def test_the_service_refuses_the_shipped_sender_naming_it(
    command: list[str], tmp_path: Path
) -> None:
    """`run_scheduler.py` and `campaign run` stop at once: exit 2, one line naming MAIL_FROM."""
    environ = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    environ |= {k: v for k, v in PRODUCTION.items() if k != "MAIL_FROM"}
    environ |= {"PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    done = subprocess.run(
        command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: Config 'MAIL_FROM': still holds the shipped")
    assert not (tmp_path / "c.db").exists()


@pytest.mark.parametrize("text", ["127.0.0.1:99999", "127.0.0.1:0", ":8000", "localhost", "h:80x"])
def test_http_listen_address_out_of_range_is_refused_before_start(text: str) -> None:
    """`campaign run --http` and run_scheduler.py's: a port no socket can bind is bad input
    (exit 2 naming the value), not a web thread that dies while the scheduler runs on."""
    from campaign.interfaces import service

    with pytest.raises(SystemExit) as stopped:
        service.main(["--once", "--http", text])
    assert stopped.value.code == 2
