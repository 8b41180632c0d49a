"""Bad input at the command line, run as a user would (subprocesses, both databases): one clear
line and exit 2 (input) or 1 (runtime), never a traceback; untrusted text printed literally."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.smtp_server import free_port

CAMPAIGN = [sys.executable, "-m", "campaign"]
SCHEDULER = [sys.executable, str(ROOT / "run_scheduler.py")]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Run:
    """Run `campaign` (or, given "--scheduler" first, run_scheduler.py) in a scratch folder
    with the test environment and a wide terminal."""

    def call(*args: str, extra: dict[str, str] | None = None) -> Any:
        environ = {**os.environ, **env, **(extra or {}), "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
        program = SCHEDULER if args[:1] == ("--scheduler",) else CAMPAIGN
        if program is SCHEDULER:
            args = args[1:]
        return subprocess.run(
            [*program, *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            errors="backslashreplace",
        )

    return call


def _clean_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one error line of a command that failed cleanly with `code`."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    return lines[-1]


def _active(run: Run) -> int:
    stats = json.loads(run("stats", "--json").stdout)
    return int(stats["subscribers"]["active"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # each case sets its own
def test_an_unreachable_postgresql_or_unusable_sqlite_path_is_one_line_and_exit_1(
    run: Run, tmp_path: Path
) -> None:
    """`db upgrade`, `stats` and `run_scheduler.py --once` against a closed port, a folder
    that is a file, or a database that is a folder: one line naming the problem, exit 1."""
    (tmp_path / "a-file").write_text("")
    cases = {
        f"postgresql://postgres@127.0.0.1:{free_port()}/test": "Connection refused",
        f"sqlite:///{tmp_path / 'a-file' / 'campaign.db'}": "a-file",
        f"sqlite:///{tmp_path}": "unable to open database file",
    }
    for url, said in cases.items():
        for command in (("db", "upgrade"), ("stats",), ("--scheduler", "--once")):
            line = _clean_failure(run(*command, extra={"DATABASE_URL": url}), 1)
            assert line.startswith("error: "), line
            assert said in line, line


def test_import_reads_utf8_with_bom_and_excel_unicode_text_with_any_header_case(
    run: Run, tmp_path: Path
) -> None:
    """A UTF-8 file with a BOM and ` Email ` header, and Excel's UTF-16 tab-separated
    "Unicode text" with `EMAIL`/`First Name`: every row imported, names intact."""
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf Email ,FIRST_NAME\r\nzoe@example.org,Zo\xc3\xab\r\n")
    excel = tmp_path / "excel.txt"
    excel.write_bytes("EMAIL\tFirst Name\r\nrene@example.org\tRené\r\n".encode("utf-16"))
    big_endian = tmp_path / "be.csv"
    big_endian.write_bytes(b"\xfe\xff" + "email,first_name\nbe@example.org,B\n".encode("utf-16-be"))
    for file in (bom, excel, big_endian):
        result = run("import", str(file))
        assert result.returncode == 0, result.stderr
        assert "added 1" in result.stdout
    assert "separated by tabs" in run("import", str(excel)).stderr
    person = json.loads(run("export", "rene@example.org").stdout)
    assert person["subscriber"]["first_name"] == "René"
    assert json.loads(run("export", "zoe@example.org").stdout)["subscriber"]["first_name"] == "Zoë"


def test_a_latin1_file_is_refused_whole_unless_its_encoding_is_given(
    run: Run, tmp_path: Path
) -> None:
    """Latin-1 / cp1252 (Excel's "CSV" on Windows): `FILE: not UTF-8, save as CSV UTF-8`,
    exit 2, nobody imported, not even the rows before the first odd byte; with --encoding
    cp1252 it is read."""
    file = tmp_path / "windows.csv"
    file.write_bytes(b"email,first_name\nann@example.org,Ann\nrene@example.org,Ren\xe9 \x80\n")
    line = _clean_failure(run("import", str(file)), 2)
    assert line == f"error: {file}: not UTF-8, save as CSV UTF-8"
    assert _active(run) == 0
    no_bom = tmp_path / "no-bom.csv"
    no_bom.write_bytes("email,first_name\nann@example.org,Ann\n".encode("utf-16-le"))
    assert "not UTF-8, save as CSV UTF-8" in _clean_failure(run("import", str(no_bom)), 2)
    assert "unknown encoding" in _clean_failure(run("import", str(file), "--encoding", "x"), 2)
    assert "not ascii" in _clean_failure(run("import", str(file), "--encoding", "ascii"), 2)
    read = run("import", str(file), "--encoding", "cp1252")
    assert read.returncode == 0, read.stderr
    assert "added 2" in read.stdout
    person = json.loads(run("export", "rene@example.org").stdout)
    assert person["subscriber"]["first_name"] == "René €"


def test_semicolons_and_unknown_columns_are_reported_not_silently_dropped(
    run: Run, tmp_path: Path
) -> None:
    """A `;`-separated file is read and the delimiter said; unknown columns are named; a
    header without an email column is refused naming what it found."""
    file = tmp_path / "semi.csv"
    file.write_text("E-Mail;Vorname;first_name\nsemi@example.org;x;Semi\n")
    result = run("import", str(file))
    assert result.returncode == 0, result.stderr
    assert "added 1" in result.stdout
    assert f"{file}: columns are separated by semicolons" in result.stderr
    assert f"{file}:1: ignored column(s) 'Vorname'" in result.stderr
    headless = tmp_path / "headless.csv"
    headless.write_text("ann@example.org,Ann\n")
    line = _clean_failure(run("import", str(headless)), 2)
    assert "the header must name an 'email' column (found 'ann@example.org', 'Ann')" in line


def test_a_10_mib_line_is_a_row_error_and_its_neighbours_are_imported(
    run: Run, tmp_path: Path
) -> None:
    """A 10 MiB line is reported by its line number and skipped; the rows around it, and after
    a bad address, are imported; a row with too many fields is reported."""
    file = tmp_path / "big.csv"
    with file.open("w") as handle:
        handle.write("email,first_name\nbefore@example.org,B\n")
        handle.write("huge@example.org," + "x" * (10 * 1024 * 1024) + "\n")
        handle.write("not-an-address,C\nnul@example.org,N\x00ul\ncomma@example.org,Smith, J\n")
        handle.write("after@example.org,A\n")
    result = run("import", str(file))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "added 3, already known 0, skipped 3 bad row(s)" in result.stdout
    assert f"{file}:3: skipped: the line is longer than 65536 characters" in result.stderr
    assert f"{file}:4: skipped: 'not-an-address'" in result.stderr
    assert f"{file}:5:" not in result.stderr  # a NUL in a name is cleaned to a space, kept
    assert f"{file}:6: skipped: 3 fields, but the header names 2" in result.stderr


def test_rich_markup_in_untrusted_text_is_printed_literally(run: Run, tmp_path: Path) -> None:
    """`[/x]` and `[bold]` in a simulated name, an address argument, a bounce report and a
    plan's subject are printed as typed; no command fails on them; a report's escape
    sequences are shown as text, not sent to the terminal."""
    simulated = run("simulate", "--name", "[/x] [bold]Ann", "--format", "table")
    assert simulated.returncode == 0, simulated.stderr
    assert "[/x] [bold]Ann" in simulated.stdout

    cleared = run("suppressions", "clear", "[/x]@example.org")
    assert cleared.returncode == 0, cleared.stderr
    assert "[/x]@example.org was not suppressed" in cleared.stdout
    subscribed = run("subscribe", "gone@example.org", "--name", "[bold]G[/x]")
    assert subscribed.returncode == 0, subscribed.stderr
    exported = run("export", "gone@example.org")
    assert json.loads(exported.stdout)["subscriber"]["first_name"] == "[bold]G[/x]"
    previewed = run("preview", "day30", "--name", "[/x]", "--out", str(tmp_path / "p.html"))
    assert previewed.returncode == 0, previewed.stderr
    assert "Hi [/x]," in previewed.stdout

    # A forged report (not ours: it names no email we sent) in a folder and a file whose
    # names carry markup and an escape sequence: the per-file line shows them as text.
    reports = tmp_path / "[bold]reports"
    reports.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "dsn_hard_bounce.eml", reports / "1\x1b]0;pwned.eml")
    ingested = run("bounces", "ingest", str(reports))
    assert ingested.returncode == 0, ingested.stderr
    assert f"{reports}/1\\x1b]0;pwned.eml: not ours: " in ingested.stdout
    assert "\x1b" not in ingested.stdout  # no escape sequence reaches the terminal

    (tmp_path / "assets").symlink_to(ROOT / "assets")
    (tmp_path / "[bold]plans").mkdir()
    old = tmp_path / "[bold]plans" / "old.yaml"
    shutil.copy(ROOT / "plans" / "thirty_day.yaml", old)
    new = old.with_name("new.yaml")
    text = old.read_text()
    assert "Your free ebook is here: Concepts of Self Healing" in text
    new.write_text(
        text.replace("Your free ebook is here: Concepts of Self Healing", "Your [/x] ebook [bold]")
    )
    checked = run("plan", "check", str(new))
    assert checked.returncode == 0, checked.stderr
    assert "[bold]plans" in checked.stdout
    diffed = run("plan", "diff", str(old), str(new))
    assert diffed.returncode == 0, diffed.stderr
    assert "subject: applies to every email not yet sent" in diffed.stdout

    imported = tmp_path / "odd.csv"
    imported.write_text("email,first_name\n[/x]@example.org,A\nok@example.org,[/x]\n")
    result = run("import", str(imported))
    assert result.returncode == 0, result.stderr
    assert "'[/x]@example.org' is not a valid email address" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("export", "\udcff@example.org"), "not UTF-8"),
        (("forget", "\udcff@example.org"), "not UTF-8"),
        (("unsubscribe", "\udcff@example.org"), "not UTF-8"),
        (("suppressions", "clear", "\udcff"), "not UTF-8"),
        (("subscribe", "a@example.org", "--name", "\udcffx"), "not UTF-8"),
        (("subscribe", "a@example.org", "--name", "a\x1b[31m"), "control characters"),
        (("subscribe", "a@example.org", "--timezone", "Europe"), "not an IANA time zone"),
        (("subscribe", "a@example.org", "--timezone", "x" * 5000), "not an IANA time zone"),
        (("subscribe", "a@example.org", "--now", "garbage"), "not an ISO-8601 instant"),
        (("subscribe", "a@example.org", "--now", "2026-13-45T00:00+00:00"), "ISO-8601"),
        (("subscribe", "a" * 400 + "@example.org"), "not a valid email address"),
        (("export", "nobody@example.org"), "no subscriber"),
        (("forget", "'; DROP TABLE subscribers; --"), "no subscriber"),
        (("simulate", "--days", "-1"), "-1"),
        (("simulate", "--start", "9999-12-31T23:00:00+00:00"), "between the years 1970 and 9000"),
        (("tick", "--now", "0001-01-01T00:00:00+00:00"), "between the years 1970 and 9000"),
        (("simulate", "--timezone", "../../etc/passwd"), "not an IANA time zone"),
        (("send-test", "1", "--to", "\udcff"), "not UTF-8"),
        (("preview", "--serve", "--port", "99999"), "99999"),
    ],
)
def test_odd_arguments_exit_2_with_one_clear_line(
    run: Run, args: tuple[str, ...], said: str
) -> None:
    """Undecodable bytes, control characters, odd time zones, bad instants and addresses: each
    command exits 2 and says what is wrong, never a traceback."""
    assert said in _clean_failure(run(*args), 2)


def test_a_bounce_report_with_raw_bytes_or_nul_in_the_address_suppresses_no_one(
    run: Run, tmp_path: Path
) -> None:
    """A report naming `g\\xffone@` or `a\\0b@` is read without a traceback and suppresses
    neither that text nor a part of it (`one@`, `b@`)."""
    for email in ("one@example.org", "b@example.org"):
        assert run("subscribe", email).returncode == 0
    (tmp_path / "reports").mkdir()
    for n, recipient in enumerate((b"g\xffone@example.org", b"a\x00b@example.org")):
        (tmp_path / "reports" / f"{n}.eml").write_bytes(
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
            b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
            b"Final-Recipient: rfc822; " + recipient + b"\nAction: failed\nStatus: 5.1.1\n"
            b"\n--b--\n"
        )
    result = run("bounces", "ingest", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stderr
    assert "0 bounced, 0 complained, 0 not ours, 2 file(s) with nothing to act on" in result.stdout
    assert _active(run) == 2
