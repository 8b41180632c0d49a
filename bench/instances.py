"""Several schedulers on one PostgreSQL database: 1, 2 and 4 `run_scheduler.py --once`
processes, started together, sending N due emails to one local SMTP sink.

    .venv/bin/python bench/instances.py                          # 20,000 emails, 1 2 4 processes
    .venv/bin/python bench/instances.py --count 2000 --processes 1 2 --json out.json

For each process count: a fresh schema with N subscribers whose welcome email is due (loaded in
bulk, not timed), one sink (Postfix's smtp-sink when installed, aiosmtpd otherwise), and the
processes started at the same instant with `--once --now`. Prints the total rate (emails over
the time from the start to the last exit, process start-up included, as cron would see it),
the rate per process, and each process's own pass time, sent count and CPU seconds. The claims
(FOR UPDATE SKIP LOCKED) keep them apart: the run fails if any email is missing or doubled.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    NOW,
    PLAN_PATH,
    SINKS,
    TEMPLATES_DIR,
    code_version,
    engine_env,
    load_average,
    load_campaign,
    machine,
    print_machine,
    reap,
    scratch_database,
    smtp_sink,
)
from campaign.domain.plan import load_plan  # noqa: E402
from campaign.storage.db import Database  # noqa: E402

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
_PASS_LINE = re.compile(r"pass at=\S+ claimed=(\d+) sent=(\d+) .*elapsed=([\d.]+)s")


@dataclass
class Run:
    """One scheduler process: what it sent, how long its pass and its whole life took."""

    sent: int = 0
    claimed: int = 0
    pass_s: float = 0.0
    lifetime_s: float = 0.0
    cpu_s: float = 0.0
    exit_code: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="due emails (default 20,000)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], metavar="K")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="a PostgreSQL URL")
    parser.add_argument("--sink", choices=SINKS, default="auto")
    parser.add_argument(
        "--connections", type=int, metavar="N", help="SMTP_CONNECTIONS for every process"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args()
    if not args.database.startswith(("postgresql", "postgres")):
        raise SystemExit("several schedulers share work on PostgreSQL only (SQLite: one sender)")
    found = machine([args.database])
    print_machine(found)
    results = [
        measure(args.database, args.count, k, args.sink, args.connections) for k in args.processes
    ]
    if args.json:
        args.json.write_text(
            json.dumps({"bench": "instances", "machine": found, "results": results}, indent=2)
        )


def measure(
    postgres_url: str, count: int, processes: int, sink_kind: str, connections: int | None
) -> dict[str, Any]:
    """Start `processes` schedulers together on `count` due emails; prints and returns rates."""
    extra = {"LOG_LEVEL": "INFO"}
    if connections:
        extra["SMTP_CONNECTIONS"] = str(connections)
    with scratch_database(postgres_url, "instances") as url:
        _prepare(url, count)
        with smtp_sink(sink_kind) as sink, tempfile.TemporaryDirectory() as workdir:
            runs, wall = _run_together(processes, engine_env(url, sink.port, **extra), workdir)
        delivered, distinct = _sent_in_database(url)
    sent = sum(run.sent for run in runs)
    result = {
        "processes": processes,
        "count": count,
        "sink": sink.kind,
        "connections": connections or 1,
        "wall_s": wall,
        "sent": sent,
        "rate": sent / wall,
        "rate_per_process": sent / wall / processes,
        "runs": [asdict(run) for run in runs],
        "sink_cpu_s": sink.cpu_seconds,
        "load_average": load_average(),
        "code": code_version(),
    }
    _print(result)
    if delivered != count or distinct != count or sent != count:
        raise SystemExit(
            f"expected {count} emails sent once each: the log says {sent}, the "
            f"database {delivered} sent rows for {distinct} enrollments"
        )
    return result


def _print(r: dict[str, Any]) -> None:
    print(
        f"\n{r['processes']} process(es), {r['count']} emails, sink {r['sink']}, "
        f"SMTP_CONNECTIONS {r['connections']}, load average {r['load_average']}"
    )
    print(
        f"  total           {r['sent']} sent in {r['wall_s']:.2f} s = {r['rate']:.0f} emails/s "
        f"(start-up included)"
    )
    print(f"  per process     {r['rate_per_process']:.0f} emails/s")
    for n, run in enumerate(r["runs"], 1):
        own = run["sent"] / run["pass_s"] if run["pass_s"] else 0.0
        print(
            f"  process {n}       sent {run['sent']:>6} in a {run['pass_s']:.2f} s pass "
            f"({own:.0f} emails/s); lived {run['lifetime_s']:.2f} s, CPU {run['cpu_s']:.2f} s, "
            f"exit {run['exit_code']}"
        )
    print(f"  sink CPU        {r['sink_cpu_s']:.2f} s")


def _prepare(url: str, count: int) -> None:
    database = Database(url)
    database.upgrade()
    database.dispose()
    plan = load_plan(PLAN_PATH, TEMPLATES_DIR)
    load_campaign(
        url,
        subscribers=count,
        due=count,
        plan_id=plan.id,
        step_keys={step.day: step.key for step in plan.steps},
    )


def _run_together(processes: int, env: dict[str, str], workdir: str) -> tuple[list[Run], float]:
    """Start the schedulers at once; wait for all; their runs and the time to the last exit."""
    logs = [Path(workdir) / f"scheduler-{n}.log" for n in range(processes)]
    runs = [Run() for _ in range(processes)]
    command = [sys.executable, str(ROOT / "run_scheduler.py"), "--once", "--now", NOW.isoformat()]
    started = time.perf_counter()
    children = []
    for log in logs:
        with log.open("wb") as output:
            children.append(
                subprocess.Popen(
                    command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )

    def wait(child: subprocess.Popen[bytes], run: Run) -> None:
        run.cpu_s, run.exit_code = reap(child.pid)
        child.returncode = run.exit_code
        run.lifetime_s = time.perf_counter() - started

    waiters = [
        threading.Thread(target=wait, args=(child, run))
        for child, run in zip(children, runs, strict=True)
    ]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    wall = time.perf_counter() - started
    for log, run in zip(logs, runs, strict=True):
        text = log.read_text(errors="replace")
        found = _PASS_LINE.search(text)
        if found is None or run.exit_code != 0:
            raise SystemExit(f"a scheduler failed (exit {run.exit_code}):\n{text[-3000:]}")
        run.claimed, run.sent, run.pass_s = int(found[1]), int(found[2]), float(found[3])
    return runs, wall


def _sent_in_database(url: str) -> tuple[int, int]:
    """Sent delivery rows, and the distinct enrollments they belong to."""
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*), count(DISTINCT enrollment_id) FROM deliveries WHERE status = 'sent'"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


if __name__ == "__main__":
    main()
