"""Throw-away things for benchmarks: a database (a temporary SQLite file or a fresh PostgreSQL
schema, dropped afterwards), subscribers loaded in bulk, a local SMTP sink, and a description
of the machine the figures were taken on."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PLAN_PATH = ROOT / "plans" / "thirty_day.yaml"
TEMPLATES_DIR = ROOT / "templates" / "emails"
#: The instant every benchmark pretends it is (passed as `--now` or a fixed clock).
NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
SECRET_KEY = "bench-secret-key-0123456789-0123456789"  # noqa: S105 - signs links to nobody
#: A sender and footer address that are not the shipped placeholders (refused with SMTP_HOST).
REAL_SENDER = {
    "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
    "POSTAL_ADDRESS": "Pain & Injury Doctor, 1 Test Street, Testville",
}
SINKS = ("auto", "smtp-sink", "aiosmtpd")
_CHUNK = 20_000
#: subscribers' zones: all of them inside the default 12-hour send window at NOW (07:00 UTC is
#: 07:00, 08:00, 12:30 and 16:00 local), so a pass at NOW sends every due lesson (a zone where
#: it is night would hold its lessons for the morning, as the engine should).
_ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo")


@contextmanager
def scratch_database(postgres_url: str | None, name: str) -> Iterator[str]:
    """The URL of an empty database, removed afterwards; PostgreSQL when `postgres_url` is
    given, else SQLite."""
    if not postgres_url:
        directory = Path(tempfile.mkdtemp(prefix=f"campaign-{name}-"))
        try:
            yield f"sqlite:///{directory / f'{name}.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # 1M subscribers is half a gigabyte
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        # `&` when the URL already has a query (a Unix socket's ?host=/run/postgresql, say)
        separator = "&" if "?" in postgres_url else "?"
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def database_kind(url: str | None) -> str:
    """ "sqlite" or "postgresql", for tables and JSON."""
    return "postgresql" if url and url.startswith(("postgres", "postgresql")) else "sqlite"


def engine_env(url: str, smtp_port: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for an engine on `url` that sends to the sink on `smtp_port` (None: no
    SMTP host). The bench's own environment goes first, so BATCH_SIZE=500 and the like pass
    through; what the bench must control wins."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "PLAN_PATH": str(PLAN_PATH),
        "TEMPLATES_DIR": str(TEMPLATES_DIR),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        **extra,
    }
    if smtp_port is not None:
        env.update(
            SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port), SMTP_SECURITY="none", **REAL_SENDER
        )
    return env


# --- bulk loading -------------------------------------------------------------------------


def load_campaign(
    url: str,
    *,
    subscribers: int,
    due: int,
    plan_id: str,
    step_keys: Mapping[int, str],
    now: datetime = NOW,
    due_day: int = 0,
) -> None:
    """Bulk-load `subscribers` enrolled readers of whom `due` have the step of plan day
    `due_day` due (0, the default: the welcome email; a later day: a morning's lesson, the
    one before it in the delivery log).

    The rest look like a campaign in its stride: most mid-plan with their next lesson due
    within the next day and their last lesson in the delivery log, some finished, a few
    unsubscribed. COPY on PostgreSQL, executemany on SQLite; never the ORM row by row.
    """
    if due_day not in step_keys:
        raise SystemExit(f"the plan has no step on day {due_day}")
    before = max((day for day in step_keys if day < due_day), default=-1)
    subscriber_rows = (_subscriber(n, due, now) for n in range(1, subscribers + 1))
    enrollment_rows = (_enrollment(n, due, plan_id, now, before) for n in range(1, subscribers + 1))
    delivery_rows = (
        row for n in range(1, subscribers + 1) if (row := _delivery(n, due, step_keys, now, before))
    )
    if database_kind(url) == "postgresql":
        _copy_postgres(url, subscriber_rows, enrollment_rows, delivery_rows)
    else:
        _insert_sqlite(url, subscriber_rows, enrollment_rows, delivery_rows)


def _naive(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(tzinfo=None)


def _subscriber(n: int, due: int, now: datetime) -> tuple[Any, ...]:
    status = "unsubscribed" if n > due and n % 100 < 3 else "active"
    joined = _naive(now - timedelta(days=n % 30, minutes=10))
    return (
        n,
        f"reader{n}@example.org",
        f"Reader{n}",
        _ZONES[n % len(_ZONES)],
        status,
        "bench",
        joined,
        joined,
        joined,
        joined if status == "unsubscribed" else None,
    )


def _mid_plan(n: int, due: int, before: int) -> tuple[str, int]:
    """(enrollment status, last plan day settled) for subscriber `n`."""
    if n <= due:
        return "active", before
    if n % 100 < 3:
        return "cancelled", n % 30
    if n % 100 < 15:
        return "completed", 30
    return "active", n % 30


def _enrollment(n: int, due: int, plan_id: str, now: datetime, before: int) -> tuple[Any, ...]:
    status, last_day = _mid_plan(n, due, before)
    started = _naive(now - timedelta(days=max(last_day, 0), minutes=10))
    last_sent = _naive(now - timedelta(hours=20)) if last_day >= 0 else None
    if n <= due:  # due within the last ten minutes, oldest first
        next_due: datetime | None = _naive(now - timedelta(seconds=n % 600))
        if last_day >= 0:
            # Two days back, in every time zone the step's local morning has passed, and the
            # one before it went on an earlier local day.
            started = _naive(now - timedelta(days=last_day + 3))
            last_sent = _naive(now - timedelta(days=2))
    elif status == "active":  # spread over the next day
        next_due = _naive(now + timedelta(seconds=60 + n % 86_400))
    else:
        next_due = None
    return (n, n, plan_id, status, started, last_day, next_due, last_sent, started)


def _delivery(
    n: int, due: int, step_keys: Mapping[int, str], now: datetime, before: int
) -> tuple[Any, ...] | None:
    _, last_day = _mid_plan(n, due, before)
    key = step_keys.get(last_day)
    if key is None:
        return None
    sent = _naive(now - timedelta(days=2) if n <= due else now - timedelta(hours=20))
    return (n, key, "sent", 1, f"<bench-{n}@example.org>", sent, sent, sent)


_SUBSCRIBER_COLUMNS = (
    "id, email, first_name, timezone, status, source, created_at, updated_at, confirmed_at,"
    " unsubscribed_at"
)
_ENROLLMENT_COLUMNS = (
    "id, subscriber_id, plan_id, status, started_at, last_day, next_due_at, last_sent_at,"
    " updated_at"
)
_DELIVERY_COLUMNS = (
    "enrollment_id, step_key, status, attempts, message_id, created_at, updated_at, sent_at"
)
_TABLES = (
    ("subscribers", _SUBSCRIBER_COLUMNS),
    ("enrollments", _ENROLLMENT_COLUMNS),
    ("deliveries", _DELIVERY_COLUMNS),
)


def _copy_postgres(url: str, *tables: Iterable[tuple[Any, ...]]) -> None:
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        for (table, columns), rows in zip(_TABLES, tables, strict=True):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        for table in ("subscribers", "enrollments"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - constants
                f" (SELECT coalesce(max(id), 1) FROM {table}))"
            )
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")  # what autovacuum would have done by the morning
        # and the load's checkpoint, so that the pass measured does not pay for it.
        with suppress(psycopg.errors.InsufficientPrivilege):
            connection.execute("CHECKPOINT")


def _insert_sqlite(url: str, *tables: Iterable[tuple[Any, ...]]) -> None:
    path = url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path, isolation_level=None)
    sqlite3.register_adapter(datetime, lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"))
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("BEGIN")
        for (table, columns), rows in zip(_TABLES, tables, strict=True):
            marks = ", ".join("?" for _ in columns.split(","))
            statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - constants
            iterator = iter(rows)
            while chunk := list(islice(iterator, _CHUNK)):
                connection.executemany(statement, chunk)
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the load's, not the pass's
    finally:
        connection.close()


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a running process has used so far (Linux /proc): what a
    sender process has spent, while it still runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- SMTP sink ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the SMTP sink did not start on port {port}")


def smtp_sink_path() -> str | None:
    """Postfix's smtp-sink, when installed (`apt-get install postfix`)."""
    return shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")


@dataclass
class Sink:
    """A running SMTP sink: what it is, its port, and its CPU seconds once it has stopped."""

    kind: str
    port: int
    cpu_seconds: float = 0.0


@contextmanager
def smtp_sink(kind: str = "auto") -> Iterator[Sink]:
    """An SMTP server on loopback that accepts and discards everything, in its own process.

    `auto` picks Postfix's smtp-sink (C, no per-message cost worth measuring) when installed,
    else aiosmtpd's Sink handler (Python: it can be the bottleneck; the baseline shows it).
    """
    path = smtp_sink_path()
    chosen = ("smtp-sink" if path else "aiosmtpd") if kind == "auto" else kind
    port = free_port()
    command: list[str]
    if chosen == "smtp-sink":
        if path is None:
            raise SystemExit(
                "smtp-sink is not installed: apt-get install postfix, or use --sink aiosmtpd"
            )
        # As root smtp-sink insists on dropping privileges after binding.
        privileges = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [path, *privileges, f"127.0.0.1:{port}", "1024"]
    else:
        command = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = Sink(chosen, port)
    try:
        wait_for_port(port)
        yield sink
    finally:
        process.terminate()
        sink.cpu_seconds, process.returncode = reap(process.pid)


def reap(pid: int) -> tuple[float, int]:
    """Wait for a child; its CPU seconds (user + system) and exit code."""
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


# --- what the figures were taken on -------------------------------------------------------


def machine(database_urls: Sequence[str | None] = ()) -> dict[str, str]:
    """The code measured, CPU count and model, Python, SQLite and (when used) PostgreSQL
    versions."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    found = {
        "code": code_version(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for url in database_urls:
        if url and database_kind(url) == "postgresql":
            with psycopg.connect(url) as connection:
                row = connection.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]) if row else "unknown"
    return found


def code_version() -> str:
    """The commit measured, and whether the engine had uncommitted changes on top of it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "campaign", "run_scheduler.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} + uncommitted changes" if changed else commit


def print_machine(found: Mapping[str, str]) -> None:
    print("machine           " + ", ".join(f"{key} {value}" for key, value in found.items()))
    print(f"load average      {load_average()} (other work on the machine skews the figures)")


def load_average() -> str:
    """The 1-minute load average, to judge whether a figure was taken on a busy machine."""
    return f"{os.getloadavg()[0]:.2f}"
