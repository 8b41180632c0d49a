"""How the database side of a pass grows with the subscriber list: 10k, 100k and 1M subscribers
of whom 10k are due.

    .venv/bin/python bench/scale.py                             # SQLite, 10k 100k 1M
    .venv/bin/python bench/scale.py --sizes 10000 100000 --due 2000 --json out.json \
        --database sqlite --database postgresql://postgres@127.0.0.1:5432/test

Each size gets a fresh database, loaded in bulk (COPY on PostgreSQL, executemany on SQLite; not
timed), and a fresh process for the measurements, so its peak RSS is that size's alone. That
process builds the engine with a transport that accepts every message instantly (this bench is
about the database, not SMTP), then measures:

- the due-query: the SELECT that `store.claim_due` sends first, timed on its own with all its
  rows fetched, and its plan;
- one claim batch: one `store.claim_due` call (BATCH_SIZE rows), rolled back afterwards;
  both are the median of five runs after a first, cold one;
- one whole pass (`make_service(app).run_pass(now)`) that sends all the due emails: its wall
  and CPU time, and its database time: every transaction from BEGIN to the end of COMMIT, and
  within that the time spent executing statements;
- the peak RSS of that process.

Targets from the performance issue: peak RSS at 1M at most 1.3x that at 10k; a pass over 1M
subscribers with 10k due under 200 ms in the database.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    NOW,
    PLAN_PATH,
    TEMPLATES_DIR,
    code_version,
    database_kind,
    engine_env,
    load_average,
    load_campaign,
    machine,
    print_machine,
    scratch_database,
)
from campaign.clock import FixedClock  # noqa: E402
from campaign.domain.plan import load_plan  # noqa: E402
from campaign.domain.transport import Envelope  # noqa: E402
from campaign.engine import App, make_service  # noqa: E402
from campaign.settings import Settings  # noqa: E402
from campaign.storage import store  # noqa: E402
from campaign.storage.db import Database  # noqa: E402
from campaign.storage.fast_path import DriverConnection  # noqa: E402

#: Targets from the performance issue.
RSS_RATIO_TARGET = 1.3
PASS_DB_TARGET_MS = 200.0


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        print(json.dumps(worker(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        metavar="N",
        help="subscriber counts (default 10000 100000 1000000)",
    )
    parser.add_argument("--due", type=int, default=10_000, help="due emails per size (10,000)")
    parser.add_argument(
        "--database",
        action="append",
        metavar="URL",
        help="'sqlite' (a temporary file) or a PostgreSQL URL; repeat for both (default sqlite)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args()
    databases: list[str | None] = [
        None if url == "sqlite" else url for url in (args.database or ["sqlite"])
    ]
    found = machine(databases)
    print_machine(found)
    results: list[dict[str, Any]] = []
    for url in databases:
        runs = [measure(url, size, min(args.due, size)) for size in args.sizes]
        _verdicts(runs)
        results.extend(runs)
    if args.json:
        args.json.write_text(
            json.dumps({"bench": "scale", "machine": found, "results": results}, indent=2)
        )


def measure(postgres_url: str | None, size: int, due: int) -> dict[str, Any]:
    """Load `size` subscribers with `due` due, then measure in a fresh process; prints a line."""
    with scratch_database(postgres_url, "scale") as url:
        database = Database(url)
        database.upgrade()
        database.dispose()
        plan = load_plan(PLAN_PATH, TEMPLATES_DIR)
        started = time.perf_counter()
        load_campaign(
            url,
            subscribers=size,
            due=due,
            plan_id=plan.id,
            step_keys={step.day: step.key for step in plan.steps},
        )
        loaded = time.perf_counter() - started
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "worker", url],
            env=engine_env(url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(
        database=database_kind(postgres_url),
        subscribers=size,
        due=due,
        load_s=loaded,
        load_average=load_average(),
        code=code_version(),
    )
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    p = r["pass"]
    print(
        f"\n{r['database']}, {r['subscribers']:,} subscribers, {r['due']:,} due "
        f"(loaded in {r['load_s']:.1f} s), BATCH_SIZE {r['batch_size']}, "
        f"load average {r['load_average']}"
    )
    print(
        f"  due-query       {r['due_query_ms']:.2f} ms (median of 5; the first, cold: {r['due_query_first_ms']:.2f} ms)"  # noqa: E501 - one report line reads best unbroken
    )
    print(f"                  plan: {' / '.join(r['due_query_plan'])}")
    print(
        f"  claim batch     {r['claim_batch_ms']:.2f} ms for {r['claim_batch_rows']} rows (median of 5)"  # noqa: E501 - one report line reads best unbroken
    )
    alone = ", ".join(f"{label} {ms:.2f}" for label, ms in r["claim_statements_ms"])
    print(f"                  its statements alone, ms: {alone}")
    print(f"  pass            {p['summary']}")
    print(f"  pass wall       {p['wall_s']:.2f} s, CPU {p['cpu_s']:.2f} s")
    print(
        f"  pass database   {p['db_ms']:.0f} ms in {p['transactions']} transactions; in Sessions "
        f"{p['statement_ms']:.0f} ms executing {p['statements']} statements and "
        f"{p['commit_ms']:.0f} ms committing; claiming {p['claim_tx_ms']:.0f} ms in "
        f"{p['claim_transactions']} batches; this process's CPU in them {p['db_cpu_ms']:.0f} ms"
    )
    print(
        f"                  per-email records on driver connections: {p['driver_ms']:.0f} ms in "
        f"{p['driver_transactions']} transactions, {p['driver_statements']} statements"
    )
    print(
        f"  peak RSS        {r['peak_rss_mb']:.0f} MB (before the pass {r['rss_before_pass_mb']:.0f} MB)"  # noqa: E501 - one report line reads best unbroken
    )


def _verdicts(runs: list[dict[str, Any]]) -> None:
    """Say whether each target is met, comparing the largest size with the smallest."""
    if len(runs) < 2:
        return
    small, large = runs[0], runs[-1]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    db_ms = large["pass"]["db_ms"]
    print(
        f"\n{large['database']}: peak RSS {large['subscribers']:,} / {small['subscribers']:,} = "
        f"{ratio:.2f} (target <= {RSS_RATIO_TARGET}: {'met' if ratio <= RSS_RATIO_TARGET else 'MISSED'}); "  # noqa: E501
        f"pass database time at {large['subscribers']:,} with {large['due']:,} due = "
        f"{db_ms:.0f} ms "
        f"(target at 1,000,000 with 10,000 due < {PASS_DB_TARGET_MS:.0f} ms: "
        f"{'met' if db_ms < PASS_DB_TARGET_MS else 'MISSED'})"
    )


# --- the measuring process ----------------------------------------------------------------


class NullConnection:
    """Accepts every message at once: the pass's SMTP side costs nothing here."""

    def send(self, envelope: Envelope, data: bytes) -> None:
        return None


class NullTransport:
    description = "null transport (bench)"

    @contextmanager
    def open(self) -> Iterator[NullConnection]:
        yield NullConnection()


@dataclass
class Transaction:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    commit_seconds: float = 0.0
    statements: list[tuple[str, float]] = field(default_factory=list)


class SQLProfile:
    """Times every transaction of an engine (BEGIN, lock wait included, to the end of COMMIT)
    and every statement in it; per thread, so parallel connections are counted right."""

    def __init__(self, engine: Engine) -> None:
        self.transactions: list[Transaction] = []
        self._local = threading.local()
        event.listen(engine, "begin", self._begin, insert=True)  # before BEGIN IMMEDIATE
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit)
        event.listen(Session, "after_commit", self._end)
        event.listen(Session, "after_rollback", self._end)
        # The per-email records bypass SQLAlchemy (fast_path.DriverConnection): timed whole.
        self.driver_transactions: list[Transaction] = []
        self.driver_statements = 0
        run_all = DriverConnection.run_all

        def timed_run_all(
            driver: DriverConnection, statements: list[tuple[str, dict[str, Any]]]
        ) -> list[Any]:
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                return run_all(driver, statements)
            finally:
                took = Transaction(time.perf_counter() - began, time.thread_time() - began_cpu)
                self.driver_transactions.append(took)
                self.driver_statements += len(statements)

        # Replaced in place, for the whole run: mypy sees a function where a method was.
        DriverConnection.run_all = timed_run_all  # type: ignore[method-assign,assignment]

    def _begin(self, connection: Any) -> None:
        self._local.current = Transaction()
        self._local.began = time.perf_counter()
        self._local.began_cpu = time.thread_time()

    def _before(self, *args: Any) -> None:
        self._local.sent = time.perf_counter()

    def _after(self, connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        current: Transaction | None = getattr(self._local, "current", None)
        if current is not None:
            current.statements.append((statement, time.perf_counter() - self._local.sent))

    def _commit(self, connection: Any) -> None:
        self._local.committing = time.perf_counter()

    def _end(self, session: Any) -> None:
        current: Transaction | None = getattr(self._local, "current", None)
        if current is not None:
            ended = time.perf_counter()
            current.seconds = ended - self._local.began
            current.cpu_seconds = time.thread_time() - self._local.began_cpu
            current.commit_seconds = ended - getattr(self._local, "committing", ended)
            self.transactions.append(current)
            self._local.current = None


def worker(url: str) -> dict[str, Any]:
    """Measure the due-query, a claim batch and a whole pass on a loaded database."""
    settings = Settings.from_env(engine_env(url))
    app = App.from_settings(settings, clock=FixedClock(NOW), transport=NullTransport())
    app.require_schema()
    claim = _claim_batches(app)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    profile = SQLProfile(app.db.engine)
    service = make_service(app)
    with app.sending():
        cpu, wall = time.process_time(), time.perf_counter()
        result = service.run_once(NOW)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    app.close()
    claims = [t for t in profile.transactions if any(s == claim.due_sql for s, _ in t.statements)]
    return {
        "batch_size": settings.batch_size,
        "due_query_ms": statistics.median(claim.due_times[1:]) * 1e3,
        "due_query_first_ms": claim.due_times[0] * 1e3,
        "due_query_plan": claim.plan,
        "claim_batch_ms": statistics.median(claim.claim_times[1:]) * 1e3,
        "claim_batch_rows": claim.rows,
        "claim_statements_ms": [(label, took * 1e3) for label, took in claim.by_statement],
        "pass": {
            "summary": result.summary(),
            "sent": result.sent,
            "wall_s": wall,
            "cpu_s": cpu,
            "db_ms": sum(t.seconds for t in profile.transactions + profile.driver_transactions)
            * 1e3,
            "transactions": len(profile.transactions) + len(profile.driver_transactions),
            "driver_ms": sum(t.seconds for t in profile.driver_transactions) * 1e3,
            "driver_transactions": len(profile.driver_transactions),
            "driver_statements": profile.driver_statements,
            "statement_ms": sum(d for t in profile.transactions for _, d in t.statements) * 1e3,
            "statements": sum(len(t.statements) for t in profile.transactions),
            "commit_ms": sum(t.commit_seconds for t in profile.transactions) * 1e3,
            "db_cpu_ms": sum(
                t.cpu_seconds for t in profile.transactions + profile.driver_transactions
            )
            * 1e3,
            "claim_tx_ms": sum(t.seconds for t in claims) * 1e3,
            "claim_transactions": len(claims),
        },
        "rss_before_pass_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


@dataclass
class ClaimFigures:
    """One claim batch measured: the due-query's SQL, times and plan; the whole call's times;
    and each statement's median time when run on its own."""

    due_sql: str
    due_times: list[float]
    claim_times: list[float]
    rows: int
    plan: list[str]
    by_statement: list[tuple[str, float]]


def _claim_batches(app: App, repeats: int = 6) -> ClaimFigures:
    """Run `claim_due` `repeats` times, each rolled back; then each of its statements on its own
    (all rows fetched, also rolled back), `repeats` times."""
    claim_times: list[float] = []
    statements: list[tuple[str, Any, float]] = []
    rows = 0
    for _ in range(repeats):
        statements, seconds, rows = _one_claim(app)
        claim_times.append(seconds)
    # On SQLite a BEGIN IMMEDIATE comes first; the due-query is the first SELECT.
    sent = [(sql, params) for sql, params, _ in statements if not sql.startswith("BEGIN")]
    times: list[list[float]] = [[] for _ in sent]
    for _ in range(repeats):
        for n, (sql, params) in enumerate(sent):
            times[n].append(_alone(app, sql, params))
    due = next(n for n, (sql, _) in enumerate(sent) if sql.lstrip().startswith("SELECT"))
    medians = [statistics.median(took[1:]) for took in times]
    return ClaimFigures(
        due_sql=sent[due][0],
        due_times=times[due],
        claim_times=claim_times,
        rows=rows,
        plan=_explain(app, *sent[due]),
        by_statement=list(zip([_label(sql) for sql, _ in sent], medians, strict=True)),
    )


def _alone(app: App, sql: str, params: Any) -> float:
    """Seconds to run one statement and fetch all its rows, in a transaction rolled back."""
    with app.db.engine.connect() as connection:
        transaction = connection.begin()
        started = time.perf_counter()
        result = connection.exec_driver_sql(sql, params)
        if result.returns_rows:
            result.all()
        took = time.perf_counter() - started
        transaction.rollback()
    return took


def _label(sql: str) -> str:
    """ "SELECT enrollments", "INSERT deliveries", "UPDATE enrollments"..."""
    verb = sql.split(None, 1)[0].upper()
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", sql)
    return f"{verb} {table[1] if table else '?'}"


def _one_claim(app: App) -> tuple[list[tuple[str, Any, float]], float, int]:
    """One `claim_due` call, rolled back: its statements (SQL, parameters, seconds), its
    time, and how many rows it claimed."""
    statements: list[tuple[str, Any, float]] = []
    sent = 0.0
    content = app.content

    def before(*args: Any) -> None:
        nonlocal sent
        sent = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters, time.perf_counter() - sent))

    with app.db.engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", before)
        event.listen(connection, "after_cursor_execute", after)
        transaction = connection.begin()
        session = Session(bind=connection)
        started = time.perf_counter()
        claims = store.claim_due(
            session,
            plans={content.plan.id: [(step.key, step.day) for step in content.plan.steps]},
            now=NOW,
            owner="bench",
            lease_until=NOW + timedelta(seconds=app.settings.lease_seconds),
            limit=app.settings.batch_size,
            new_message_id=content.composer.new_message_id,
        )
        seconds = time.perf_counter() - started
        session.close()
        transaction.rollback()
    return statements, seconds, len(claims)


def _explain(app: App, sql: str, params: Any) -> list[str]:
    """The due-query's plan, one line per step (EXPLAIN QUERY PLAN / EXPLAIN, costs left out)."""
    with app.db.engine.connect() as connection:
        if app.db.is_sqlite:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            return [str(row[-1]) for row in rows]
        rows = connection.exec_driver_sql(f"EXPLAIN {sql}", params).all()
    lines = [re.sub(r"\s*\(cost=[^)]*\)", "", str(row[0])).strip(" ->") for row in rows]
    return [line for line in lines if not line.startswith(("Index Cond", "Filter", "Sort Key"))]


if __name__ == "__main__":
    main()
