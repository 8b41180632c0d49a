"""The command line and the service, run as subprocesses the way an operator runs them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bounce_reports import arf, dsn
from tests.conftest import ROOT
from tests.smtp_server import SMTPServer, free_port

CAMPAIGN = [sys.executable, "-m", "campaign"]
SCHEDULER = [sys.executable, str(ROOT / "run_scheduler.py")]
NOW = "2026-12-01T10:00:00+00:00"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Run:
    """Run a command in a scratch folder with the test environment (real PATH, no .env)."""

    def call(*args: str, extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Any:
        environ = {**os.environ, **env, **(extra or {}), "PYTHONPATH": str(ROOT)}
        for name in drop:
            environ.pop(name, None)
        return subprocess.run(
            list(args), cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120
        )

    return call


def test_subscribe_then_tick_puts_the_welcome_email_in_the_dev_sink(
    run: Run, tmp_path: Path
) -> None:
    """With no SMTP_HOST, the welcome email lands as an .eml file in the outbox folder."""
    result = run(
        *CAMPAIGN,
        "subscribe",
        "you@example.com",
        "--timezone",
        "Europe/Berlin",
        drop=("SMTP_HOST",),
    )
    assert result.returncode == 0, result.stderr
    result = run(*CAMPAIGN, "tick", drop=("SMTP_HOST",))
    assert result.returncode == 0, result.stderr
    assert "sent 1" in result.stdout
    [eml] = (tmp_path / "outbox").glob("*.eml")
    content = eml.read_text()
    assert "To: you@example.com" in content
    assert "X-Campaign-Step: thirty-day-self-healing/welcome" in content
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in content


def test_the_service_sends_over_smtp_with_once_and_now(run: Run, smtp_server: SMTPServer) -> None:
    """`run_scheduler.py --once --now` drains what is due at that instant over real SMTP."""
    assert (
        run(*CAMPAIGN, "subscribe", "ann@example.org", "--name", "Ann", "--now", NOW).returncode
        == 0
    )
    result = run(*SCHEDULER, "--once", "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert "claimed=1 sent=1" in result.stderr
    [mail] = smtp_server.to("ann@example.org")
    assert "ebook" in str(mail.message["Subject"]).lower()
    again = run(*SCHEDULER, "--once", "--now", NOW)
    assert "sent=0" in again.stderr
    assert len(smtp_server.received) == 1


def test_log_format_json_prints_one_json_object_a_line(run: Run, smtp_server: SMTPServer) -> None:
    """With LOG_FORMAT=json every line the service writes parses as JSON, pass line included."""
    run(*CAMPAIGN, "subscribe", "ann@example.org", "--now", NOW)
    result = run(*SCHEDULER, "--once", "--now", NOW, extra={"LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert entries
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("claimed=1 sent=1" in entry["message"] for entry in entries)
    refused = run(*SCHEDULER, "--once", extra={"LOG_FORMAT": "xml"})
    assert refused.returncode == 2
    assert "LOG_FORMAT" in refused.stderr


def test_plan_check_passes_on_the_shipped_plan_and_names_file_and_line_on_a_broken_copy(
    run: Run, tmp_path: Path
) -> None:
    """A broken plan copy exits 2 with `file:line: field: problem` on stderr."""
    ok = run(*CAMPAIGN, "plan", "check")
    assert ok.returncode == 0, ok.stderr
    assert "31 steps" in ok.stdout
    broken = tmp_path / "broken.yaml"
    lines = (ROOT / "plans" / "thirty_day.yaml").read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if "template: day03.html" in line)
    lines[number] = lines[number].replace("day03.html", "day03-missing.html")
    broken.write_text("\n".join(lines) + "\n")
    result = run(*CAMPAIGN, "plan", "check", str(broken))
    assert result.returncode == 2
    assert f"broken.yaml:{number + 1}: steps[3].template:" in result.stderr
    assert "day03-missing.html does not exist" in result.stderr


def test_a_template_error_is_reported_with_the_template_line(run: Run, tmp_path: Path) -> None:
    """A template that fails for a sample subscriber names the plan line and the template line."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "emails", templates)
    day = templates / "day02.html"
    lines = day.read_text().splitlines()
    lines.insert(3, "<p>{{ subscriber.nickname }}</p>")
    day.write_text("\n".join(lines) + "\n")
    result = run(*CAMPAIGN, "plan", "check", extra={"TEMPLATES_DIR": str(templates)})
    assert result.returncode == 2
    assert "steps[2].template:" in result.stderr
    assert "day02.html:4:" in result.stderr
    assert "nickname" in result.stderr


def test_import_reports_bad_rows_by_line_and_adds_nobody_twice(run: Run, tmp_path: Path) -> None:
    """Bad rows are named by line and skipped; importing the same file again adds no one."""
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email,first_name,timezone\n"
        "ann@example.org,Ann,Europe/Berlin\n"
        "not-an-address,Bob,UTC\n"
        "cat@example.org,Cat,Mars/Olympus\n"
        "ANN@example.org,Ann again,UTC\n"
        "dan@example.org,,\n"
    )
    first = run(*CAMPAIGN, "import", str(csv_file))
    assert first.returncode == 0, first.stderr
    assert "added 2" in first.stdout
    assert "people.csv:3:" in first.stderr
    assert "not-an-address" in first.stderr
    assert "people.csv:4:" in first.stderr
    assert "Mars/Olympus" in first.stderr
    second = run(*CAMPAIGN, "import", str(csv_file))
    assert "added 0" in second.stdout
    stats = json.loads(run(*CAMPAIGN, "stats", "--json").stdout)
    assert stats["subscribers"]["active"] == 2
    assert stats["steps"][0] == {
        "key": "welcome",
        "day": 0,
        "sent": 0,
        "bounced": 0,
        "failed": 0,
        "skipped": 0,
        "unknown": 0,
        "pending": 2,
        "unsubscribes_48h": 0,
        "clicks": 0,
    }


def test_bad_input_exits_2_and_names_what_is_wrong(run: Run) -> None:
    """A bad address, a bad config variable and a bad --now each exit 2 with a clear message."""
    bad_address = run(*CAMPAIGN, "subscribe", "ann@@example.org")
    assert bad_address.returncode == 2
    assert "ann@@example.org" in bad_address.stderr
    bad_config = run(*CAMPAIGN, "tick", extra={"SMTP_PORT": "abc"})
    assert bad_config.returncode == 2
    assert "SMTP_PORT" in bad_config.stderr
    bad_now = run(*CAMPAIGN, "tick", "--now", "2026-12-01T07:00:00")
    assert bad_now.returncode == 2
    assert "offset" in bad_now.stderr
    bad_scheduler_config = run(*SCHEDULER, "--once", extra={"TICK_SECONDS": "-1"})
    assert bad_scheduler_config.returncode == 2
    assert "TICK_SECONDS" in bad_scheduler_config.stderr


def test_preview_renders_a_step_by_day_number_without_sending(
    run: Run, smtp_server: SMTPServer
) -> None:
    """`preview 3 --format eml` prints the day-3 message with its campaign headers."""
    result = run(*CAMPAIGN, "preview", "3", "--format", "eml")
    assert result.returncode == 0, result.stderr
    assert "X-Campaign-Step: thirty-day-self-healing/day03" in result.stdout
    assert "List-Unsubscribe: <https://news.example.org/unsubscribe/" in result.stdout
    assert smtp_server.received == []
    unknown = run(*CAMPAIGN, "preview", "day99")
    assert unknown.returncode == 2
    assert "day99" in unknown.stderr


def test_send_test_delivers_one_step_to_one_inbox(run: Run, smtp_server: SMTPServer) -> None:
    """`send-test` sends the step, marked as a test, and records nothing."""
    result = run(*CAMPAIGN, "send-test", "welcome", "--to", "marketer@example.org")
    assert result.returncode == 0, result.stderr
    [mail] = smtp_server.to("marketer@example.org")
    assert str(mail.message["Subject"]).startswith("[TEST day 0] ")
    stats = json.loads(run(*CAMPAIGN, "stats", "--json").stdout)
    assert stats["steps"][0]["sent"] == 0


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    # Waits on a real subprocess (not on a schedule): polls an observable outcome with a deadline.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env, "PYTHONPATH": str(ROOT), "TICK_SECONDS": "1"}
    with log.open("wb") as output:
        return subprocess.Popen(
            SCHEDULER, cwd=log.parent, env=environ, stdout=output, stderr=subprocess.STDOUT
        )


def test_a_killed_service_loses_nothing_and_sends_nothing_twice(
    run: Run, env: dict[str, str], tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """SIGKILL between passes, more signups, a restart: every welcome arrives exactly once."""
    for n in range(3):
        assert run(*CAMPAIGN, "subscribe", f"p{n}@example.org").returncode == 0
    service = _start_service(env, tmp_path / "service.log")
    try:
        assert _wait_for(lambda: len(smtp_server.received) == 3, 30)
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=10)
    for n in range(3, 5):
        assert run(*CAMPAIGN, "subscribe", f"p{n}@example.org").returncode == 0
    assert run(*SCHEDULER, "--once").returncode == 0
    recipients = sorted(r.recipients[0] for r in smtp_server.received)
    assert recipients == [f"p{n}@example.org" for n in range(5)]


def test_sigterm_stops_the_service_cleanly_within_ten_seconds(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The service exits 0 on SIGTERM, logging that it stopped."""
    log = tmp_path / "service.log"
    service = _start_service(env, log)
    try:
        assert _wait_for(lambda: "pass at=" in log.read_text(), 30), log.read_text()
        started = time.monotonic()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=10)
    finally:
        service.kill()
        service.wait()
    assert service.returncode == 0, log.read_text()
    assert time.monotonic() - started < 10
    assert "stopped" in log.read_text()


def test_export_prints_everything_and_forget_erases_all_but_a_suppression_hash(run: Run) -> None:
    """`export` shows a person's data as JSON; after `forget` it is gone and cannot be re-added."""
    assert run(*CAMPAIGN, "subscribe", "eva@example.org", "--name", "Eva").returncode == 0
    exported = run(*CAMPAIGN, "export", "eva@example.org")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["subscriber"]["email"] == "eva@example.org"
    assert data["subscriber"]["first_name"] == "Eva"
    assert len(data["enrollments"]) == 1
    assert run(*CAMPAIGN, "forget", "eva@example.org").returncode == 0
    gone = run(*CAMPAIGN, "export", "eva@example.org")
    assert gone.returncode == 2
    again = run(*CAMPAIGN, "subscribe", "EVA@example.org")
    assert again.returncode == 2
    assert "suppressed" in again.stderr


def test_bounces_ingest_reads_a_folder_of_reports_and_suppresses(run: Run, tmp_path: Path) -> None:
    """`bounces ingest DIR` bounces and marks complained the addresses whose reports are about
    our emails, says per file applied / not ours (why) / not a bounce, and suppresses no one else.

    Changed with VERP: the forged fixtures that used to suppress now count as not ours."""
    for email in ("gone@example.org", "angry@example.org", "slow@example.org"):
        assert run(*CAMPAIGN, "subscribe", email).returncode == 0
    assert run(*CAMPAIGN, "tick", drop=("SMTP_HOST",)).returncode == 0
    sent = {eml.name.split("_", 1)[1]: eml.read_bytes() for eml in (tmp_path / "outbox").glob("*")}
    gone = sent["gone@example.org.eml"]
    return_path = gone.split(b"\r\n", 1)[0].decode().removeprefix("Return-Path: <")[:-1]
    assert return_path.startswith("bounces+d")
    reports = tmp_path / "reports"
    # The mailed reports only: the provider webhook payloads beside them are not mail.
    shutil.copytree(ROOT / "tests" / "fixtures", reports, ignore=shutil.ignore_patterns("webhooks"))
    (reports / "real_bounce.eml").write_bytes(
        dsn(delivered_to=return_path, final_recipient="gone@example.org", original=gone)
    )
    (reports / "real_complaint.eml").write_bytes(arf(original=sent["angry@example.org.eml"]))
    result = run(*CAMPAIGN, "bounces", "ingest", str(reports))
    assert result.returncode == 0, result.stderr
    assert "1 bounced, 1 complained, 2 not ours, 1 file(s) with nothing to act on" in result.stdout
    lines = result.stdout.splitlines()
    assert any("real_bounce.eml: applied: bounced gone@example.org" in line for line in lines)
    assert any(
        "real_complaint.eml: applied: complained angry@example.org" in line for line in lines
    )
    assert any(
        "dsn_hard_bounce.eml: not ours: gone@example.org: no VERP token" in line for line in lines
    )
    assert any("dsn_delayed.eml: not a bounce" in line for line in lines)
    stats = json.loads(run(*CAMPAIGN, "stats", "--json").stdout)
    assert stats["subscribers"] == {
        "pending": 0,
        "active": 1,
        "unsubscribed": 0,
        "bounced": 1,
        "complained": 1,
    }


def test_plan_diff_names_each_change_and_whom_it_touches(run: Run, tmp_path: Path) -> None:
    """`plan diff OLD NEW` lists added, removed, moved and reworded steps with subscriber counts."""
    for n in range(3):
        assert run(*CAMPAIGN, "subscribe", f"p{n}@example.org", "--now", NOW).returncode == 0
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    (tmp_path / "plans").mkdir()
    new = tmp_path / "plans" / "new.yaml"
    text = (ROOT / "plans" / "thirty_day.yaml").read_text()
    start = text.index("  - key: day06\n")
    block = text[start : text.index("  - key: day07\n")]
    text = text.replace(block, block.replace("key: day06", "key: bonus"))
    text = text.replace(
        'subject: "Why your upper back hurts (mostly good news)"',
        'subject: "Why the upper back hurts"',
    )
    new.write_text(text)
    result = run(*CAMPAIGN, "plan", "diff", str(ROOT / "plans" / "thirty_day.yaml"), str(new))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert any("added" in r and "bonus" in r and r.rstrip(" │").endswith("3") for r in rows)
    assert any("removed" in r and "day06" in r for r in rows)
    assert any("changed" in r and "day01" in r and "subject" in r for r in rows)


def test_subscribe_restarts_an_unsubscribed_address_only_with_resubscribe(
    run: Run, tmp_path: Path
) -> None:
    """`subscribe` leaves someone who unsubscribed alone (and says how to bring them back);
    `--resubscribe` starts their plan afresh; `import` never re-subscribes them."""
    assert run(*CAMPAIGN, "subscribe", "ret@example.org", "--now", NOW).returncode == 0
    assert run(*CAMPAIGN, "unsubscribe", "ret@example.org", "--now", NOW).returncode == 0
    plain = run(*CAMPAIGN, "subscribe", "ret@example.org", "--now", NOW)
    assert plain.returncode == 0
    assert "status unsubscribed" in plain.stdout
    assert "--resubscribe" in plain.stdout
    (tmp_path / "back.csv").write_text("email\nret@example.org\n")
    imported = run(*CAMPAIGN, "import", "back.csv", "--now", NOW)
    assert "added 0, already known 1" in imported.stdout
    again = run(*CAMPAIGN, "subscribe", "ret@example.org", "--resubscribe", "--now", NOW)
    assert again.returncode == 0, again.stderr
    assert "resubscribed ret@example.org" in again.stdout
    data = json.loads(run(*CAMPAIGN, "export", "ret@example.org").stdout)
    assert [e["status"] for e in data["enrollments"]] == ["cancelled", "active"]


def test_a_changed_plan_id_is_refused_everywhere_until_the_plan_is_renamed(
    run: Run, plan_file: Path, smtp_server: SMTPServer
) -> None:
    """Editing `id:` with subscribers in flight: the service, tick and serve refuse to start
    (exit 2, how many, how to fix), plan check and plan diff report it; `plan rename` moves
    them, refusing bad renames, and sending goes on under the new id."""
    for n in range(2):
        assert run(*CAMPAIGN, "subscribe", f"p{n}@example.org", "--now", NOW).returncode == 0
    original = ROOT / "plans" / "thirty_day.yaml"
    plan_file.write_text(
        original.read_text().replace("id: thirty-day-self-healing", "id: spine-month", 1)
    )
    edited = {"PLAN_PATH": str(plan_file)}
    for command in (
        [*SCHEDULER, "--once", "--now", NOW],
        SCHEDULER,  # the long-running service: refused at start, not left running
        [*SCHEDULER, "--http", f"127.0.0.1:{free_port()}"],
        [*CAMPAIGN, "tick", "--now", NOW],
        [*CAMPAIGN, "serve", "--port", str(free_port())],
    ):
        refused = run(*command, extra=edited)
        assert refused.returncode == 2, (command, refused.stderr)
        assert "2 active enrollment(s)" in refused.stderr
        assert "campaign plan rename thirty-day-self-healing spine-month" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert smtp_server.received == []

    check = run(*CAMPAIGN, "plan", "check", extra=edited)
    assert check.returncode == 2
    line = next(n for n, t in enumerate(plan_file.read_text().splitlines(), 1) if "id: spine" in t)
    assert f"thirty_day.yaml:{line}: id:" in check.stderr
    elsewhere = run(*CAMPAIGN, "plan", "check", str(plan_file))  # not the plan PLAN_PATH names
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "warning:" in elsewhere.stderr
    assert "2 active enrollment(s)" in elsewhere.stderr
    diff = run(*CAMPAIGN, "plan", "diff", str(original), str(plan_file))
    rows = [r for r in diff.stdout.splitlines() if "│" in r]
    assert any(" id " in r and r.rstrip(" │").endswith("2") for r in rows), diff.stdout
    same = run(*CAMPAIGN, "plan", "diff", str(plan_file), str(plan_file), extra=edited)
    assert "no changes" not in same.stdout
    assert "thirty-day-self-healing" in same.stdout

    for bad, message in (
        (["spine-month", "thirty-day-self-healing"], "no enrollments under plan id 'spine-month'"),
        (["thirty-day-self-healing", "Spine Month"], "not a valid plan id"),
        (["thirty-day-self-healing", "thirty-day-self-healing"], "both"),
    ):
        refused = run(*CAMPAIGN, "plan", "rename", *bad, extra=edited)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr
    renamed = run(
        *CAMPAIGN, "plan", "rename", "thirty-day-self-healing", "spine-month", extra=edited
    )
    assert renamed.returncode == 0, renamed.stderr
    assert "moved 2 enrollment(s)" in renamed.stdout
    assert run(*CAMPAIGN, "plan", "check", extra=edited).returncode == 0
    sent = run(*SCHEDULER, "--once", "--now", NOW, extra=edited)
    assert sent.returncode == 0, sent.stderr
    steps = sorted(str(r.message["X-Campaign-Step"]) for r in smtp_server.received)
    assert steps == ["spine-month/welcome"] * 2


def test_a_rename_onto_a_plan_id_that_has_subscribers_is_refused(run: Run, plan_file: Path) -> None:
    """`plan rename OLD NEW` never merges two plans' subscribers: NEW must have none."""
    assert run(*CAMPAIGN, "subscribe", "a@example.org", "--now", NOW).returncode == 0
    plan_file.write_text(
        plan_file.read_text().replace("id: thirty-day-self-healing", "id: other", 1)
    )
    other = {"PLAN_PATH": str(plan_file)}
    assert run(*CAMPAIGN, "subscribe", "b@example.org", "--now", NOW, extra=other).returncode == 0
    refused = run(*CAMPAIGN, "plan", "rename", "thirty-day-self-healing", "other", extra=other)
    assert refused.returncode == 2
    assert "plan id 'other' already has 1 enrollment(s)" in refused.stderr
    data = json.loads(run(*CAMPAIGN, "export", "a@example.org").stdout)
    assert data["enrollments"][0]["plan_id"] == "thirty-day-self-healing"


def test_a_busy_http_port_stops_the_service_with_a_clear_message(run: Run) -> None:
    """`run_scheduler.py --http` and `campaign serve` on a port in use exit 1 at once, naming
    the address, instead of running on without their pages."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (
            [*SCHEDULER, "--http", f"127.0.0.1:{port}"],
            [*CAMPAIGN, "serve", "--port", str(port)],
        ):
            refused = run(*command)
            assert refused.returncode == 1, refused.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr
            assert "Traceback" not in refused.stderr


def test_db_backup_copies_sqlite_online_and_points_postgresql_to_pg_dump(
    run: Run, env: dict[str, str], tmp_path: Path
) -> None:
    """`campaign db backup PATH` writes a SQLite copy that opens with its subscribers (a copy
    again replaces it whole); on PostgreSQL it exits 2 and names pg_dump."""
    assert run(*CAMPAIGN, "subscribe", "ann@example.org", "--now", NOW).returncode == 0
    target = tmp_path / "backups" / "campaign.db"
    target.parent.mkdir()
    result = run(*CAMPAIGN, "db", "backup", str(target))
    if not env["DATABASE_URL"].startswith("sqlite"):
        assert result.returncode == 2
        assert "pg_dump" in result.stderr
        assert not target.exists()
        return
    assert result.returncode == 0, result.stderr
    assert f"to {target}" in result.stdout
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("SELECT email FROM subscribers").fetchall() == [("ann@example.org",)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert run(*CAMPAIGN, "subscribe", "bob@example.org", "--now", NOW).returncode == 0
    assert run(*CAMPAIGN, "db", "backup", str(target)).returncode == 0
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("SELECT count(*) FROM subscribers").fetchone() == (2,)
    assert list(target.parent.iterdir()) == [target]
    missing = tmp_path / "no-such-folder" / "campaign.db"
    refused = run(*CAMPAIGN, "db", "backup", str(missing))
    assert refused.returncode == 2, refused.stderr
    assert str(missing) in refused.stderr
    assert "Traceback" not in refused.stderr
