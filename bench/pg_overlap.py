"""Can the sending thread build a message while PostgreSQL runs the per-email statement?

    .venv/bin/python bench/pg_overlap.py
    .venv/bin/python bench/pg_overlap.py --work-us 250 --count 3000 \\
        --database postgresql://postgres@127.0.0.1:5432/test

At one connection on loopback, each email waits for its record-and-prove statement (its
server time and round trip: ~390 of ~520 µs wall, docs/performance.md §17), and nothing else
happens meanwhile. This measures, per iteration of "one statement and `--work-us` of CPU (as
building a lesson takes)", four ways of running the statement, on a table shaped like the
delivery log's settle (an UPDATE ... RETURNING by primary key):

- cursor, serial: as `DriverConnection` does today (psycopg's cursor, prepared after five
  uses), then the CPU work;
- pipeline, sync each: psycopg's pipeline mode held open, `execute`, the work, then `sync`
  and `fetchone` (psycopg sends its queued commands only at the sync);
- libpq, serial and overlapped: the prepared statement sent with libpq's own calls
  (`send_query_prepared`, `flush`), then either its result awaited before the work, or the
  work done first and the result read after.

"overlapped" close to "work alone" means the statement hid behind the work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scratch import machine, print_machine, scratch_database

_ROWS = 1000
_SETTLE = "UPDATE deliveries SET n = n + 1, sent_at = now() WHERE id = {id} RETURNING n"


def _busy(microseconds: float) -> None:
    """CPU work on this thread, as building a message is (not a sleep: that would free it)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def _per_iteration(run: Callable[[int], None], count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        run(n % _ROWS + 1)
    return (time.perf_counter() - started) / count * 1e6


def measure(url: str, work_us: float, count: int) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET synchronous_commit TO off")  # as the recorder's connection
        connection.execute(
            "CREATE TABLE deliveries (id int PRIMARY KEY, n int NOT NULL, sent_at timestamptz)"
        )
        connection.execute(
            "INSERT INTO deliveries (id, n) SELECT g, 0 FROM generate_series(1, %s) g", (_ROWS,)
        )
        cursor = connection.cursor()
        cursor_sql = _SETTLE.format(id="%s")

        def cursor_serial(row: int) -> None:
            cursor.execute(cursor_sql, (row,))
            cursor.fetchone()
            _busy(work_us)

        libpq = connection.pgconn
        libpq.prepare(b"settle", _SETTLE.format(id="$1").encode())

        def libpq_send(row: int) -> None:
            libpq.send_query_prepared(b"settle", [str(row).encode()])
            libpq.flush()

        def libpq_result() -> None:
            last = None
            while (result := libpq.get_result()) is not None:
                last = result
            if last is None or last.status != pq.ExecStatus.TUPLES_OK:
                raise RuntimeError(f"the statement failed: {last and last.error_message!r}")

        def libpq_serial(row: int) -> None:
            libpq_send(row)
            libpq_result()
            _busy(work_us)

        def libpq_overlapped(row: int) -> None:
            libpq_send(row)
            _busy(work_us)
            libpq_result()

        figures: dict[str, list[float]] = {}
        for _ in range(3):  # interleaved rounds; the median is kept
            for name, run in (
                ("cursor, serial", cursor_serial),
                ("libpq, serial", libpq_serial),
                ("libpq, overlapped", libpq_overlapped),
                ("work alone", lambda _row: _busy(work_us)),
            ):
                figures.setdefault(name, []).append(_per_iteration(run, count))
            with connection.pipeline() as pipeline:

                def pipelined(row: int) -> None:
                    cursor.execute(cursor_sql, (row,))
                    _busy(work_us)
                    pipeline.sync()
                    cursor.fetchone()

                figures.setdefault("pipeline, sync each", []).append(
                    _per_iteration(pipelined, count)
                )
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--work-us", type=float, default=250, help="CPU work per iteration")
    parser.add_argument("--count", type=int, default=3000, help="iterations per figure")
    args = parser.parse_args()
    print_machine(machine([args.database]))
    with scratch_database(args.database, "overlap") as url:
        figures = measure(url, args.work_us, args.count)
    alone = figures["work alone"]
    print(f"µs per iteration (one statement and {args.work_us:.0f} µs of CPU; median of 3):")
    for name, value in figures.items():
        extra = "" if name == "work alone" else f"   statement adds {value - alone:,.0f}"
        print(f"  {name:<22} {value:>7,.0f}{extra}")


if __name__ == "__main__":
    main()
