"""Sending rate of the engine against plain smtplib: N due emails to one local SMTP sink.

    .venv/bin/python bench/throughput.py                        # 20,000 lessons, SQLite
    .venv/bin/python bench/throughput.py --count 2000 --connections 1 2 4 \\
        --database sqlite --database postgresql://postgres@127.0.0.1:5432/test --json out.json

For each database and connection count: N subscribers whose step of plan day `--day` is due
are loaded in bulk (not timed; day 1 by default, a morning's lesson; day 0 is the welcome
email with the ebook attached), then one engine pass sends them all
(`make_service(app).run_once(now)`, what `run_scheduler.py --once --now` runs, in a fresh
process whose set-up, sender processes included, is not timed). Then the same number of
messages, the very bytes the engine builds for that step, are blasted by plain smtplib over
the same number of connections, one thread each. Each side gets its own fresh sink of the
same kind: Postfix's smtp-sink when installed, aiosmtpd otherwise. Prints both rates, their
ratio, and the engine's CPU time per email (every sender process's; the target is 300 us).

`--connections N` passes SMTP_CONNECTIONS=N to the engine, spread over N sender processes
(SENDER_PROCESSES=N; `--spread threads` keeps them all in one process). Other engine
settings pass through from the environment, e.g. `BATCH_SIZE=500 .venv/bin/python
bench/throughput.py`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from campaign import Engine
from campaign.clock import FixedClock
from campaign.content import compose
from campaign.content.compose import Recipient
from campaign.delivery import feed, smtp, timing
from campaign.domain.plan import load_plan
from campaign.engine import make_service
from campaign.settings import Settings
from campaign.storage import store
from campaign.storage.db import Database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    NOW,
    PLAN_PATH,
    SINKS,
    TEMPLATES_DIR,
    code_version,
    database_kind,
    engine_env,
    load_average,
    load_campaign,
    machine,
    print_machine,
    process_cpu_seconds,
    scratch_database,
    smtp_sink,
)

#: The engine's CPU budget per email, from the performance issue.
CPU_TARGET_US = 300.0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        print(json.dumps(WORKERS[sys.argv[1]](json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="due emails (default 20,000)")
    parser.add_argument(
        "--database",
        action="append",
        metavar="URL",
        help="'sqlite' (a temporary file) or a PostgreSQL URL; repeat for both (default sqlite)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="SMTP connections, for the engine (SMTP_CONNECTIONS) and smtplib (default 1)",
    )
    parser.add_argument(
        "--day",
        type=int,
        nargs="+",
        default=[1],
        metavar="D",
        help="plan day of the step sent (default 1, a lesson; 0 is the welcome email)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="runs of each configuration; with more than one, their medians are printed too",
    )
    parser.add_argument(
        "--spread",
        choices=("processes", "threads"),
        default="processes",
        help="the engine's connections in one sender process each (default), or all in one",
    )
    parser.add_argument("--sink", choices=SINKS, default="auto")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time the CPU of each part of an email (claim, compose, record, SMTP) in "
        "the scheduler process; meant for one connection in one process",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="run the engine under cProfile and print its N costliest functions (slows it down)",
    )
    args = parser.parse_args()
    databases: list[str | None] = [
        None if url == "sqlite" else url for url in (args.database or ["sqlite"])
    ]
    found = machine(databases)
    print_machine(found)
    results, medians = [], []
    for url in databases:
        for day in args.day:
            for connections in args.connections:
                runs = [
                    measure(
                        url,
                        args.count,
                        connections,
                        args.sink,
                        args.profile,
                        day,
                        args.spread,
                        args.parts,
                    )
                    for _ in range(args.repeat)
                ]
                results += runs
                medians.append(median_of(runs))
    if args.repeat > 1:
        print_medians(medians)
    if args.json:
        report = {"bench": "throughput", "machine": found, "results": results, "medians": medians}
        args.json.write_text(json.dumps(report, indent=2))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's figures of one configuration (rates, ratio, CPU per email)."""
    first = runs[0]
    return {
        **{key: first[key] for key in ("database", "day", "connections", "sender_processes")},
        **{key: first[key] for key in ("count", "message_bytes", "sink")},
        "runs": len(runs),
        "engine_rate": statistics.median(r["engine"]["rate"] for r in runs),
        "smtplib_rate": statistics.median(r["smtplib"]["rate"] for r in runs),
        "ratio": statistics.median(r["ratio"] for r in runs),
        "ratios": [round(r["ratio"], 3) for r in runs],
        "engine_cpu_us": statistics.median(
            r["engine"]["cpu_s"] / max(r["engine"]["sent"], 1) * 1e6 for r in runs
        ),
        "smtplib_cpu_us": statistics.median(
            r["smtplib"]["cpu_s"] / max(r["smtplib"]["sent"], 1) * 1e6 for r in runs
        ),
        "engine_peak_rss_mb": max(r["engine"]["peak_rss_mb"] for r in runs),
    }


def print_medians(medians: list[dict[str, Any]]) -> None:
    print("\nmedians (engine CPU includes every sender process's)")
    print("  database    day  KiB  conn  engine/s  smtplib/s  ratio (runs)          CPU us/email")
    for m in medians:
        runs = " ".join(f"{ratio:.2f}" for ratio in m["ratios"])
        print(
            f"  {m['database']:<10} {m['day']:>4} {m['message_bytes'] / 1024:>4.0f} "
            f"{m['connections']:>5} {m['engine_rate']:>9,.0f} {m['smtplib_rate']:>10,.0f}  "
            f"{m['ratio']:.2f} ({runs}){'':<{max(0, 14 - len(runs))}} "
            f"{m['engine_cpu_us']:>6.0f}"
        )


def measure(
    postgres_url: str | None,
    count: int,
    connections: int,
    sink: str,
    profile: int = 0,
    day: int = 1,
    spread: str = "processes",
    parts: bool = False,
) -> dict[str, Any]:
    """One engine pass and one smtplib blast of `count` emails over `connections`; prints both."""
    processes = connections if spread == "processes" else 1
    with scratch_database(postgres_url, "throughput") as url:
        _prepare(url, count, day)
        message = _sample_message(url, day)
        with smtp_sink(sink) as engine_sink:
            engine = _worker(
                "engine",
                {"profile": profile, "parts": parts},
                engine_env(
                    url,
                    engine_sink.port,
                    SMTP_CONNECTIONS=str(connections),
                    SENDER_PROCESSES=str(processes),
                ),
            )
        with tempfile.NamedTemporaryFile(suffix=".eml") as file:
            file.write(message)
            file.flush()
            with smtp_sink(sink) as blast_sink:
                blast = _worker(
                    "blast",
                    {
                        "port": blast_sink.port,
                        "count": count,
                        "connections": connections,
                        "message": file.name,
                    },
                    dict(os.environ),
                )
    engine_rate = engine["sent"] / engine["wall_s"]
    blast_rate = blast["sent"] / blast["wall_s"]
    result = {
        "database": database_kind(postgres_url),
        "sink": engine_sink.kind,
        "count": count,
        "connections": connections,
        "sender_processes": processes,
        "day": day,
        "message_bytes": len(message),
        "engine": {**engine, "rate": engine_rate, "sink_cpu_s": engine_sink.cpu_seconds},
        "smtplib": {**blast, "rate": blast_rate, "sink_cpu_s": blast_sink.cpu_seconds},
        "ratio": engine_rate / blast_rate,
        "load_average": load_average(),
        "code": code_version(),
    }
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    engine, blast = r["engine"], r["smtplib"]
    cpu_us = engine["cpu_s"] / max(engine["sent"], 1) * 1e6
    used = engine["connections_used"]
    note = "" if used == r["connections"] else f" (engine has no SMTP_CONNECTIONS: used {used})"
    print(
        f"\n{r['database']}, {r['count']} emails (day {r['day']}) of "
        f"{r['message_bytes'] / 1024:.0f} KiB, {r['connections']} connection(s){note} in "
        f"{r['sender_processes']} sender process(es), sink {r['sink']}, "
        f"load average {r['load_average']}"
    )
    print(
        f"  engine          {engine['sent']} sent in {engine['wall_s']:.2f} s = "
        f"{engine['rate']:.0f} emails/s   ({engine['summary']})"
    )
    print(
        f"  smtplib         {blast['sent']} sent in {blast['wall_s']:.2f} s = "
        f"{blast['rate']:.0f} emails/s"
    )
    print(f"  ratio           engine / smtplib = {r['ratio']:.2f}")
    verdict = "meets" if cpu_us <= CPU_TARGET_US else "misses"
    print(
        f"  engine CPU      {engine['cpu_s']:.2f} s = {cpu_us:.0f} us per email "
        f"({verdict} the {CPU_TARGET_US:.0f} us target); smtplib {blast['cpu_s']:.2f} s = "
        f"{blast['cpu_s'] / max(blast['sent'], 1) * 1e6:.0f} us per email"
    )
    print(
        f"  sink CPU        engine run {engine['sink_cpu_s']:.2f} s, "
        f"smtplib run {blast['sink_cpu_s']:.2f} s"
    )
    print(f"  engine peak RSS {engine['peak_rss_mb']:.0f} MB (the largest of its processes)")
    if engine["sent"] != r["count"] or blast["sent"] != r["count"]:
        print(
            f"  WARNING         of {r['count']}, the engine sent {engine['sent']} "
            f"(error: {engine['error']}) and smtplib {blast['sent']}"
        )
    if engine.get("parts"):
        shares = ", ".join(f"{name} {us:.0f}" for name, us in engine["parts"].items())
        print(f"  CPU by part     us per email (this process's thread CPU): {shares}")
        walls = ", ".join(f"{name} {us:.0f}" for name, us in engine["parts_wall"].items())
        print(f"  wall by part    us per email (CPU and waits): {walls}")
    if engine.get("profile"):
        print(engine["profile"])


def _prepare(url: str, count: int, day: int) -> None:
    """Migrate and load `count` subscribers whose step of `day` is due (set-up, not timed)."""
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
        due_day=day,
    )


def _sample_message(url: str, day: int) -> bytes:
    """The step of `day` exactly as the engine builds it, for smtplib to send N times."""
    app = Engine.from_settings(Settings.from_env(engine_env(url, 25)), clock=FixedClock(NOW))
    content = app.content
    step = next(step for step in content.plan.steps if step.day == day)
    composed = content.composer.compose(
        step,
        Recipient(1, "reader1@example.org", "Reader1"),
        message_id=content.composer.new_message_id(),
        now=NOW,
        delivery_id=1,
    )
    app.close()
    return composed.data


def _worker(
    name: str, params: dict[str, Any], env: dict[str, str], script: Path | None = None
) -> dict[str, Any]:
    """Run a worker of `script` (this one by default) in a fresh process (its own CPU and
    memory figures); its JSON result."""
    done = subprocess.run(
        [sys.executable, str(script or Path(__file__).resolve()), name, json.dumps(params)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} worker failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def engine_worker(params: dict[str, Any]) -> dict[str, Any]:
    """Build the engine and start its sender processes (not timed), then time one pass at
    NOW: wall time, and the CPU of this process and of every sender process."""
    settings = Settings.from_env(os.environ)
    app = Engine.from_settings(settings, clock=FixedClock(NOW))
    app.require_schema()
    # Not app.run_pass: the sender processes start here, before the pass is timed.
    service = make_service(app)
    parts = _time_parts() if params.get("parts") else None
    profiler = cProfile.Profile() if params.get("profile") else None
    with app.sending(), service:
        senders = service.senders.pids() if service.senders else []
        cpu, wall = time.process_time(), time.perf_counter()
        senders_cpu = sum(process_cpu_seconds(pid) for pid in senders)
        if profiler:
            profiler.enable()
        result = service.run_once(NOW)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        senders_cpu = sum(process_cpu_seconds(pid) for pid in senders) - senders_cpu
    app.close()
    report = io.StringIO()
    if profiler:
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("cumulative").print_stats("campaign/", params["profile"])
        # Where the CPU itself goes, library code included (a function's own time).
        stats.sort_stats("tottime").print_stats(params["profile"])
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,  # the senders, now ended
    )
    return {
        "sent": result.sent,
        "summary": result.summary(),
        "error": result.error,
        "wall_s": wall,
        "cpu_s": cpu + senders_cpu,
        "senders_cpu_s": senders_cpu,
        "connections_used": int(getattr(settings, "smtp_connections", 1)),
        "peak_rss_mb": peak / 1024,
        "profile": report.getvalue(),
        "parts": None if parts is None else _per_email(parts[0], result.sent),
        "parts_wall": None if parts is None else _per_email(parts[1], result.sent),
    }


def _per_email(seconds: dict[str, float], sent: int) -> dict[str, float]:
    """Each part's total seconds as microseconds per email sent."""
    return {name: total / max(sent, 1) * 1e6 for name, total in seconds.items()}


def _time_parts() -> tuple[dict[str, float], dict[str, float]]:
    """Wrap the parts of an email's journey so that each adds up its thread CPU time and its
    wall time (their difference is time spent waiting: for the server, the database)."""
    spent: dict[str, float] = {}
    waited: dict[str, float] = {}
    for name, owner, attribute in (
        ("claim", feed.DueClaims, "next_batch"),
        ("compose", compose.Composer, "compose"),
        ("record", store.DeliveryRecorder, "record_and_prove"),
        ("smtp", smtp.SMTPConnection, "send"),
        ("next due", timing, "next_due"),
    ):
        spent[name] = waited[name] = 0.0
        setattr(owner, attribute, _timed(getattr(owner, attribute), name, spent, waited))
    return spent, waited


_NESTED = threading.local()


def _timed(function: Any, name: str, spent: dict[str, float], waited: dict[str, float]) -> Any:
    """`function`, adding its thread CPU to `spent[name]` and its wall time to `waited[name]`,
    less the parts it calls: the next message is composed (and its batch claimed) inside
    `send`, while the server reads."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        outer = getattr(_NESTED, "seconds", 0.0)
        outer_wall = getattr(_NESTED, "wall", 0.0)
        _NESTED.seconds = _NESTED.wall = 0.0
        started, started_wall = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.thread_time() - started
            elapsed_wall = time.perf_counter() - started_wall
            spent[name] += elapsed - _NESTED.seconds
            waited[name] += elapsed_wall - _NESTED.wall
            _NESTED.seconds = outer + elapsed
            _NESTED.wall = outer_wall + elapsed_wall

    return timed


def run_lanes(connections: int, lane: Callable[[int], int]) -> dict[str, Any]:
    """Run `lane(index)` on `connections` threads started together; each returns how many it
    sent. The wall and CPU time of the whole, from the common start."""
    sent = [0] * connections
    start = threading.Barrier(connections + 1)

    def run(index: int) -> None:
        start.wait()
        sent[index] = lane(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    cpu, wall = time.process_time(), time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"sent": sum(sent), "wall_s": wall, "cpu_s": cpu}


def smtplib_lane(port: int, numbers: range, data: bytes) -> int:
    """Plain smtplib: `sendmail` of `data` to reader<n> for each n, on one connection."""
    sent = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo()
        for n in numbers:
            smtp.sendmail("newsletter@example.com", [f"reader{n}@example.org"], data)
            sent += 1
    return sent


def blast_worker(params: dict[str, Any]) -> dict[str, Any]:
    """Send the pre-built message `count` times over `connections` smtplib connections."""
    data = Path(params["message"]).read_bytes()
    count, connections, port = params["count"], params["connections"], params["port"]
    return run_lanes(
        connections, lambda lane: smtplib_lane(port, range(lane, count, connections), data)
    )


WORKERS = {"engine": engine_worker, "blast": blast_worker}

if __name__ == "__main__":
    main()
