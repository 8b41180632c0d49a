"""How long one sending pass takes for N due emails, sent over SMTP to a local aiosmtpd sink.

    .venv/bin/python bench/one_pass.py                     # 10,000 emails, SQLite
    .venv/bin/python bench/one_pass.py --count 2000 --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/one_pass.py --webhook-endpoint      # an endpoint takes delivery.sent

Prints the time of the pass, the rate, and the time to enrol the subscribers. The sink runs in
its own process so it does not share this process's CPU. A PostgreSQL run uses a fresh schema
and drops it afterwards.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from campaign import Engine
from campaign.clock import FixedClock
from campaign.delivery.passes import PassResult
from campaign.people import subscriptions
from campaign.settings import Settings
from campaign.storage.db import Database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import REAL_SENDER, scratch_database  # noqa: E402 - after the path is set

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"sink did not start on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (default: temp SQLite)")
    parser.add_argument(
        "--webhook-endpoint",
        action="store_true",
        help="add an outgoing webhook endpoint first (so each 250 also writes an event)",
    )
    args = parser.parse_args()

    with scratch_database(args.database, "bench") as url:
        report, enrolled, result, elapsed = run(url, args.count, webhook=args.webhook_endpoint)
    backend = "postgresql" if args.database else "sqlite"
    print(f"database          {backend}")
    print(f"subscribers       {report.added} enrolled in {enrolled:.2f} s")
    print(f"pass              {result.summary()}")
    print(f"pass time         {elapsed:.2f} s")
    print(f"rate              {result.sent / elapsed:.0f} emails/s")
    print(f"per email         {elapsed / max(result.sent, 1) * 1e6:.0f} us")
    print(f"webhook endpoint  {'yes' if args.webhook_endpoint else 'no'}")


def run(
    url: str, count: int, *, webhook: bool = False
) -> tuple[subscriptions.ImportReport, float, PassResult, float]:
    """Enrol `count` subscribers, then time one pass that sends all their welcome emails."""
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        database = Database(url)
        database.upgrade()
        database.dispose()
        settings = Settings.from_env(
            {
                "DATABASE_URL": url,
                "SMTP_HOST": "127.0.0.1",
                **REAL_SENDER,
                "SMTP_PORT": str(port),
                "SMTP_SECURITY": "none",
                "SECRET_KEY": "bench-secret-key-0123456789-0123456789",
                "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
                "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
                "BATCH_SIZE": "500",
                "LOG_LEVEL": "WARNING",
            }
        )
        app = Engine.from_settings(settings, clock=FixedClock(NOW))
        if webhook:  # written to the outbox only: nothing is delivered during the pass
            app.webhooks.add("http://127.0.0.1:9/hooks", ["delivery.sent"])
        rows = (
            (
                n + 2,
                {"email": f"reader{n}@example.org", "first_name": f"Reader{n}", "timezone": "UTC"},
            )
            for n in range(count)
        )
        started = time.perf_counter()
        report = subscriptions.import_rows(app.db, app.plan, rows, now=NOW)
        enrolled = time.perf_counter() - started
        started = time.perf_counter()
        result = app.run_pass(NOW)
        elapsed = time.perf_counter() - started
        if webhook:
            [endpoint] = app.webhooks.endpoints()
            print(f"webhook events    {endpoint.pending} pending after the pass")
        app.close()
    finally:
        sink.terminate()
        sink.wait()
    return report, enrolled, result, elapsed


if __name__ == "__main__":
    main()
