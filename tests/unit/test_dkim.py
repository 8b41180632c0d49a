"""DKIM settings, keys and `campaign dkim keygen`: a partial or unreadable configuration is a
clear error at start, keys of both types sign what dkimpy verifies, and the CLI stays light."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner

from campaign.content.dkim import DkimSigner, aligned, signer_from_settings
from campaign.content.dkim_keys import new_signing_key, parse_signing_key
from campaign.content.mime import address, build_message
from campaign.errors import ConfigError
from campaign.interfaces.cli import main
from campaign.settings import Settings
from tests.conftest import ROOT

ENV = {"MAIL_FROM": "Clinic <newsletter@example.org>"}


def _message() -> bytes:
    return build_message(
        sender=address("newsletter@example.org", "Clinic"),
        recipient=address("sam@example.com", "Sam"),
        subject="Hello",
        text="Hi Sam.\n",
        html="<p>Hi Sam.</p>\n",
        message_id="<m1@example.org>",
        date=datetime(2026, 10, 20, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"DKIM_DOMAIN": "example.org"}, "DKIM_SELECTOR"),
        ({"DKIM_SELECTOR": "s1"}, "DKIM_DOMAIN"),
        ({"DKIM_DOMAIN": "example.org", "DKIM_SELECTOR": "s1"}, "DKIM_PRIVATE_KEY_FILE"),
        ({"DKIM_PRIVATE_KEY_FILE": "k.pem"}, "DKIM_DOMAIN"),
    ],
)
def test_a_partial_dkim_configuration_names_the_missing_variable(
    given: dict[str, str], missing: str
) -> None:
    """Some of the three DKIM variables set is a mistake, named, not a silent "unsigned"."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**ENV, **given})
    assert caught.value.variable == missing
    assert caught.value.exit_code == 2


def test_a_bad_selector_or_feedback_sender_is_refused() -> None:
    """A selector that is no DNS label, or a Feedback-ID sender holding ':', is refused."""
    with pytest.raises(ConfigError, match="DKIM_SELECTOR"):
        Settings.from_env({**ENV, "DKIM_SELECTOR": "a b"})
    with pytest.raises(ConfigError, match="FEEDBACK_ID_SENDER"):
        Settings.from_env({**ENV, "FEEDBACK_ID_SENDER": "a:b"})


def _dkim_settings(key_file: Path, domain: str = "example.org") -> Settings:
    return Settings.from_env(
        {
            **ENV,
            "DKIM_DOMAIN": domain,
            "DKIM_SELECTOR": "s1",
            "DKIM_PRIVATE_KEY_FILE": str(key_file),
        }
    )


def test_an_unreadable_or_unparsable_key_is_a_config_error(tmp_path: Path) -> None:
    """A missing file, or one holding no key, stops the start naming DKIM_PRIVATE_KEY_FILE."""
    with pytest.raises(ConfigError, match=r"DKIM_PRIVATE_KEY_FILE.*cannot read"):
        signer_from_settings(_dkim_settings(tmp_path / "absent.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"DKIM_PRIVATE_KEY_FILE.*junk\.pem"):
        signer_from_settings(_dkim_settings(junk))


def test_no_dkim_settings_means_no_signer() -> None:
    """Unset, as before: nothing is signed."""
    assert signer_from_settings(Settings.from_env(ENV)) is None


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keys_of_both_types_sign_what_dkimpy_verifies(tmp_path: Path, kind: str) -> None:
    """A key file as keygen writes it (PKCS#8 PEM) signs with the algorithm of its type."""
    pem, _ = new_signing_key("rsa" if kind == "rsa" else "ed25519")
    (tmp_path / "k.pem").write_bytes(pem)
    signer = signer_from_settings(_dkim_settings(tmp_path / "k.pem"))
    assert signer is not None
    signed = signer.sign(_message())
    record = f"v=DKIM1; k={kind}; p={signer.key.public}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    assert (b"a=rsa-sha256" if kind == "rsa" else b"a=ed25519-sha256") in signed
    assert b"c=relaxed/relaxed" in signed


def test_an_ed25519_seed_as_dknewkey_writes_it_is_read() -> None:
    """dkimpy's own key format for Ed25519 (a base64 seed) is accepted too."""
    _, key = new_signing_key("ed25519")
    again = parse_signing_key(key.private + b"\n")
    assert again.public == key.public
    signed = DkimSigner("example.org", "s1", again).sign(_message())
    record = f"v=DKIM1; k=ed25519; p={key.public}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


def test_a_dkim_domain_not_aligned_with_from_warns_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Signing for another domain than From's is allowed but said: DMARC will not pass on it."""
    pem, _ = new_signing_key("ed25519")
    (tmp_path / "k.pem").write_bytes(pem)
    with caplog.at_level(logging.WARNING, logger="campaign.dkim"):
        signer_from_settings(_dkim_settings(tmp_path / "k.pem", domain="mailer.example.net"))
    assert "does not align with the From domain example.org" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="campaign.dkim"):
        signer_from_settings(_dkim_settings(tmp_path / "k.pem", domain="example.org"))
    assert caplog.text == ""
    assert aligned("example.org", "news.example.org")
    assert not aligned("example.org", "example.org.evil.net")


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_writes_a_private_key_0600_and_prints_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The key file is the owner's only; the printed record holds the key's public half, and a
    second run never overwrites the key (exit 2)."""
    monkeypatch.chdir(tmp_path)
    args = ["dkim", "keygen", "--type", kind, "--out", "k.pem", "--domain", "example.org"]
    result = CliRunner().invoke(main, args, env={"MAIL_FROM": ENV["MAIL_FROM"]})
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat("k.pem").st_mode) == 0o600
    key = parse_signing_key(Path("k.pem").read_bytes())
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("campaign._domainkey.example.org. IN TXT ")
    value = "".join(re.findall(r'"([^"]*)"', line))
    assert value == f"v=DKIM1; k={kind}; p={key.public}"
    again = CliRunner().invoke(main, args, env={"MAIL_FROM": ENV["MAIL_FROM"]})
    assert again.exit_code == 2
    assert "never overwritten" in again.output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--domain", "exa mple;com"),
        ("--domain", "-x.example"),
        ("--selector", 's1"x'),
        ("--selector", "a b"),
    ],
)
def test_keygen_refuses_a_name_no_dns_record_could_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    """A selector or domain that is not DNS labels: exit 2 naming the option, and no key
    written (a record printed for it could never be published)."""
    monkeypatch.chdir(tmp_path)
    args = ["dkim", "keygen", "--out", "k.pem", "--domain", "example.org", option, value]
    result = CliRunner().invoke(main, args, env={"MAIL_FROM": ENV["MAIL_FROM"]})
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not Path("k.pem").exists()


def test_an_unreadable_key_stops_a_command_with_exit_2(tmp_path: Path) -> None:
    """`campaign tick` with a DKIM key file it cannot read: one line naming it, exit 2."""
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}",
        "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        "DKIM_DOMAIN": "example.com",
        "DKIM_SELECTOR": "s1",
        "DKIM_PRIVATE_KEY_FILE": str(tmp_path / "absent.pem"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "campaign", "tick"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "DKIM_PRIVATE_KEY_FILE" in done.stderr
    assert "absent.pem" in done.stderr


def test_the_cli_help_loads_no_signing_library(tmp_path: Path) -> None:
    """dkimpy and cryptography are imported by the commands that sign, not by `--help`."""
    code = (
        "import sys; from campaign.interfaces.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dkim', 'cryptography', 'nacl'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip().endswith("[]"), done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_non_ascii_recipient_and_subject_still_verify(kind: str) -> None:
    """A UTF-8 local part (SMTPUTF8), an encoded name and subject: the signature holds."""
    _, key = new_signing_key("rsa" if kind == "rsa" else "ed25519")
    data = build_message(
        sender=address("newsletter@example.org", "Clinic"),
        recipient=address("jürgen@straße.de", "Zoë Müller"),
        subject="Grüße — день 1",
        text="Hallo Zoë\n",
        html="<p>Zoë</p>\n",
        message_id="<m2@example.org>",
        date=datetime(2026, 10, 20, tzinfo=UTC),
        extra_headers={"List-Id": "Plän <plan.example.org>"},
    )
    signed = DkimSigner("example.org", "s1", key).sign(data)
    record = f"v=DKIM1; k={kind}; p={key.public}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
