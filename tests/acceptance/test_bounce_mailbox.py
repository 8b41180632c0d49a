"""`campaign bounces poll` against a real Dovecot started here (IMAP and POP3, plain and TLS),
run as a subprocess the way an operator runs it, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bounce_reports import arf, dsn
from tests.conftest import ROOT
from tests.dovecot_server import PASSWORD, Dovecot
from tests.smtp_server import free_port

CAMPAIGN = [sys.executable, "-m", "campaign"]

Run = Callable[..., subprocess.CompletedProcess[str]]

#: For tests that store nothing (a refused configuration or server): one database is enough.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Run:
    """Run the CLI in a scratch folder with the test environment (real PATH, no .env)."""

    def call(*args: str, extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Any:
        environ = {**os.environ, **env, **(extra or {}), "PYTHONPATH": str(ROOT)}
        for name in drop:
            environ.pop(name, None)
        return subprocess.run(
            [*CAMPAIGN, *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return call


def _sent(run: Run, tmp_path: Path, *emails: str) -> dict[str, bytes]:
    """Subscribe `emails` and send their welcome emails to the dev sink: what each received."""
    for email in emails:
        assert run("subscribe", email).returncode == 0
    assert run("tick", drop=("SMTP_HOST",)).returncode == 0
    return {
        eml.name.split("_", 1)[1][:-4]: eml.read_bytes() for eml in (tmp_path / "outbox").iterdir()
    }


def _return_path(sent: bytes) -> str:
    return sent.split(b"\r\n", 1)[0].decode().removeprefix("Return-Path: <")[:-1]


def _bounce_for(sent: bytes, email: str) -> bytes:
    """The DSN a receiving MTA sends back to our VERP return path for `email`."""
    return dsn(delivered_to=_return_path(sent), final_recipient=email, original=sent)


def _subscribers(run: Run) -> dict[str, int]:
    result = run("stats", "--json")
    assert result.returncode == 0, result.stderr
    counts: dict[str, int] = json.loads(result.stdout)["subscribers"]
    return counts


def _poll(run: Run, url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    settings = {"BOUNCE_MAILBOX_URL": url, "BOUNCE_MAILBOX_PASSWORD": PASSWORD, **extra}
    return run("bounces", "poll", *args, extra=settings)


NOT_A_REPORT = (
    b"From: reader@example.org\r\nTo: bounces@example.org\r\nSubject: thanks\r\n\r\nHi!\r\n"
)


def test_imap_poll_bounces_whom_a_report_is_about_and_flags_every_message_seen(
    run: Run, tmp_path: Path, dovecot: Dovecot
) -> None:
    """Over IMAP a real bounce bounces the subscriber, a forged one suppresses nobody, and all
    three messages are flagged seen, not deleted: a second poll finds nothing new."""
    sent = _sent(run, tmp_path, "gone@example.org", "angry@example.org")
    forged = dsn(delivered_to="bounces@example.org", final_recipient="angry@example.org")
    dovecot.deliver(_bounce_for(sent["gone@example.org"], "gone@example.org"), forged, NOT_A_REPORT)
    url = dovecot.url("imap", port=dovecot.imap_port, query="?security=none")

    result = _poll(run, url)

    assert result.returncode == 0, result.stderr
    assert (
        "1 bounced, 0 complained, 1 not ours, 1 message(s) with nothing to act on" in result.stdout
    )
    assert (
        f"imap://127.0.0.1:{dovecot.imap_port}/INBOX uid 1: applied: bounced gone@example.org"
        in result.stdout
    )
    assert "uid 2: not ours: angry@example.org" in result.stdout
    assert _subscribers(run)["bounced"] == 1
    assert _subscribers(run)["active"] == 1
    assert dovecot.flags() == [{"\\Seen"}, {"\\Seen"}, {"\\Seen"}]
    again = _poll(run, url)
    assert again.returncode == 0, again.stderr
    assert "0 bounced, 0 complained, 0 not ours, 0 message(s)" in again.stdout


def test_imap_poll_with_delete_expunges_the_reports_but_not_other_mail(
    run: Run, tmp_path: Path, dovecot: Dovecot
) -> None:
    """`--delete` removes the complaint and the forged report it read; a message that is no
    report (a person writing back) stays, flagged seen."""
    sent = _sent(run, tmp_path, "angry@example.org")
    forged = dsn(delivered_to="bounces@example.org", final_recipient="angry@example.org")
    dovecot.deliver(NOT_A_REPORT, arf(original=sent["angry@example.org"]), forged)
    url = dovecot.url("imap", port=dovecot.imap_port, query="?security=none")

    result = _poll(run, url, "--delete", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["complained"], report["not_ours"], report["not_reports"]) == (1, 1, 1)
    assert [o["verdict"] for o in report["outcomes"]] == ["not a bounce", "applied", "not ours"]
    assert _subscribers(run)["complained"] == 1
    assert dovecot.flags() == [{"\\Seen"}]


def test_pop3_poll_deletes_reports_and_keep_leaves_them_applying_each_once(
    run: Run, tmp_path: Path, dovecot: Dovecot
) -> None:
    """Over POP3, `--keep` applies a bounce and leaves the mailbox whole; the next poll applies
    it again (nothing doubles) and deletes the reports, leaving the message that is not one."""
    sent = _sent(run, tmp_path, "gone@example.org", "stays@example.org")
    forged = dsn(delivered_to="bounces@example.org", final_recipient="stays@example.org")
    dovecot.deliver(_bounce_for(sent["gone@example.org"], "gone@example.org"), forged, NOT_A_REPORT)
    url = dovecot.url("pop3", port=dovecot.pop3_port, query="?security=none")

    kept = _poll(run, url, "--keep")

    assert kept.returncode == 0, kept.stderr
    assert "1 bounced, 0 complained, 1 not ours, 1 message(s)" in kept.stdout
    assert len(dovecot.flags()) == 3
    after_first = _subscribers(run)
    assert after_first["bounced"] == 1

    result = _poll(run, url)

    assert result.returncode == 0, result.stderr
    assert (
        f"pop3://127.0.0.1:{dovecot.pop3_port} message 1: applied: bounced gone@example.org"
        in result.stdout
    )
    assert _subscribers(run) == after_first
    assert len(dovecot.flags()) == 1
    assert "(status bounced)" in run("subscribe", "gone@example.org").stdout


@SQLITE_ONLY
def test_poll_reads_at_most_limit_messages(run: Run, tmp_path: Path, dovecot: Dovecot) -> None:
    """`--limit 1` reads the oldest message only; the next poll reads the next."""
    dovecot.deliver(NOT_A_REPORT, NOT_A_REPORT)
    url = dovecot.url("imap", port=dovecot.imap_port, query="?security=none")

    first = _poll(run, url, "--limit", "1", "--json")

    assert [o["message"][-5:] for o in json.loads(first.stdout)["outcomes"]] == ["uid 1"]
    assert dovecot.flags() == [{"\\Seen"}, set()]


def test_poll_over_tls_trusts_the_configured_ca_and_refuses_an_unknown_certificate(
    run: Run, tmp_path: Path, dovecot: Dovecot
) -> None:
    """IMAPS and POP3 with STARTTLS read the mailbox when BOUNCE_MAILBOX_CA_FILE holds the
    server's CA; without it the certificate is refused (exit 1) and nothing is read."""
    sent = _sent(run, tmp_path, "gone@example.org")
    dovecot.deliver(_bounce_for(sent["gone@example.org"], "gone@example.org"))
    imaps = dovecot.url("imaps", port=dovecot.imaps_port)

    refused = _poll(run, imaps)

    assert refused.returncode == 1
    assert (
        f"bounce mailbox imaps://127.0.0.1:{dovecot.imaps_port}: TLS certificate not trusted"
        in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert dovecot.flags() == [set()]
    starttls = dovecot.url("pop3", port=dovecot.pop3_port)
    assert _poll(run, starttls).returncode == 1
    assert _subscribers(run)["bounced"] == 0

    trusted = _poll(run, imaps, BOUNCE_MAILBOX_CA_FILE=str(dovecot.ca_file))

    assert trusted.returncode == 0, trusted.stderr
    assert "1 bounced" in trusted.stdout
    assert dovecot.flags() == [{"\\Seen"}]
    popped = _poll(run, starttls, "--keep", BOUNCE_MAILBOX_CA_FILE=str(dovecot.ca_file))
    assert popped.returncode == 0, popped.stderr


@SQLITE_ONLY
def test_a_wrong_password_exits_1_naming_the_server_and_never_the_password(
    run: Run, dovecot: Dovecot
) -> None:
    """A refused login is one line naming the server and its reply, exit 1, no traceback."""
    url = dovecot.url("imap", port=dovecot.imap_port, query="?security=none")

    result = run(
        "bounces",
        "poll",
        extra={"BOUNCE_MAILBOX_URL": url, "BOUNCE_MAILBOX_PASSWORD": "wrong-password-42"},
    )

    assert result.returncode == 1
    assert f"bounce mailbox imap://127.0.0.1:{dovecot.imap_port}:" in result.stderr
    assert "uthentication failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert "wrong-password-42" not in result.stderr + result.stdout


@SQLITE_ONLY
def test_nothing_listening_exits_1_naming_the_server(run: Run) -> None:
    """A mailbox server that is down: exit 1 with the server and the refusal, no traceback."""
    port = free_port()
    result = _poll(run, f"pop3://u@127.0.0.1:{port}?security=none")

    assert result.returncode == 1
    assert f"bounce mailbox pop3://127.0.0.1:{port}: Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://u@mail.example.org", "the scheme is one of imaps, imap, pop3s, pop3"),
        ("imaps://mail.example.org/INBOX", "the user name is missing"),
        ("imaps://u:hunter2@mail.example.org", "set BOUNCE_MAILBOX_PASSWORD instead"),
        ("pop3s://u@mail.example.org/INBOX", "a POP3 mailbox has no folders"),
        ("imaps://u@mail.example.org?security=none", "imaps:// always uses TLS"),
    ],
)
def test_a_bad_mailbox_url_exits_2_naming_the_variable(run: Run, url: str, problem: str) -> None:
    """BOUNCE_MAILBOX_URL that is not a mailbox: exit 2, the variable and what is wrong."""
    result = _poll(run, url)

    assert result.returncode == 2
    assert "BOUNCE_MAILBOX_URL" in result.stderr
    assert problem in result.stderr
    assert "hunter2" not in result.stderr


@SQLITE_ONLY
def test_poll_without_a_mailbox_configured_exits_2(run: Run) -> None:
    """No BOUNCE_MAILBOX_URL: exit 2 saying which variable to set."""
    result = run("bounces", "poll")

    assert result.returncode == 2
    assert "BOUNCE_MAILBOX_URL" in result.stderr
