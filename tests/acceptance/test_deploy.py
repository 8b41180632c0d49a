"""The deployment files: the systemd unit passes `systemd-analyze verify`, the alert rules pass
`promtool check rules`, and every metric the rules name is one /metrics exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from campaign.insights.metrics import Metrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def _tool(name: str, package: str) -> str:
    """The tool's path; without it the test skips here and fails under CI (.ci/run installs it)."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not installed (apt-get install -y {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, with the venv /opt/campaign and the environment file moved into a
    scratch folder (verify insists ExecStart's program exists), verifies without a word."""
    analyze = _tool("systemd-analyze", "systemd")
    venv = tmp_path / "opt"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "campaign").symlink_to(sys.executable)
    env_file = tmp_path / "campaign.env"
    env_file.write_text("SMTP_HOST=\n", encoding="utf-8")
    unit = (DEPLOY / "campaign.service").read_text(encoding="utf-8")
    # The installed command, not a checkout: the wheel puts `campaign` in the venv's bin/.
    assert "ExecStart=/opt/campaign/bin/campaign run --http 127.0.0.1:8000" in unit
    assert "Environment=CAMPAIGN_HOME=/var/lib/campaign" in unit
    moved = unit.replace("/opt/campaign", str(venv)).replace(
        "/etc/campaign/campaign.env", str(env_file)
    )
    (tmp_path / "campaign.service").write_text(moved, encoding="utf-8")

    checked = subprocess.run(
        [analyze, "verify", str(tmp_path / "campaign.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr
    assert checked.stdout + checked.stderr == ""  # an unknown key is only a warning there


def test_the_unit_stops_gracefully_within_its_timeout() -> None:
    """The stop timeout covers the wait for the final reply (SMTP_FINAL_REPLY_TIMEOUT's
    default) so a stop never turns a sent message into an unknown one; SIGTERM goes to the
    main process only, which stops its sender processes itself."""
    unit = (DEPLOY / "campaign.service").read_text(encoding="utf-8")
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.MULTILINE))
    assert int(settings["TimeoutStopSec"]) > 600
    assert settings["KillMode"] == "mixed"
    for hardening in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert settings[hardening] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "on-failure"


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """`promtool check rules` accepts alerts.yml, and `check config` the scrape example."""
    promtool = _tool("promtool", "prometheus")
    rules = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    shutil.copy(DEPLOY / "prometheus" / "scrape.yml", tmp_path)
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "campaign-alerts.yml")
    config = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "scrape.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_alerts_name_only_metrics_that_metrics_exports() -> None:
    """Every campaign_* series an alert reads is in the /metrics exposition, and the rules
    ask for what the issue names: paused, no pass, welcome p95 over 60 s, bounces, complaints."""
    rules = YAML(typ="safe").load(
        (DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    )
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    metrics = Metrics()
    metrics.update(emails={}, subscribers={}, backlog=0, last_pass_age=None)
    exported = set(re.findall(r"^(campaign_\w+)", metrics.render().decode(), re.MULTILINE))
    exported |= set(re.findall(r"^# TYPE (campaign_\w+)", metrics.render().decode(), re.M))
    named = {name for expr in exprs for name in re.findall(r"\bcampaign_\w+", expr)}

    assert named
    assert named - exported == set()
    assert {
        "campaign_sending_paused",
        "campaign_last_pass_age_seconds",
        "campaign_welcome_latency_seconds_bucket",
        "campaign_suppressions",
    } <= named
    assert any("0.95" in expr and "> 60" in expr for expr in exprs)
