"""Confirm-to-accepted latency: from a visitor's confirmation click to the SMTP server's 250 for
the welcome email, measured against the real service (`run_scheduler.py --http`).

    .venv/bin/python bench/welcome_latency.py              # 50 signups, SQLite
    .venv/bin/python bench/welcome_latency.py --count 20 --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/welcome_latency.py --background 20000   # during a 20k morning send

The SMTP server (aiosmtpd) runs in this process and notes when each message arrives; the
service runs in its own process, as in production. With `--background N`, N subscribers have
their email due as the service starts, so the signups happen while that bulk pass is sending.
Prints the median, p95 and worst latency, and how much of the bulk send was done meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    PLAN_PATH,
    REAL_SENDER,
    TEMPLATES_DIR,
    load_campaign,
    scratch_database,
)
from campaign.clock import SystemClock  # noqa: E402
from campaign.domain.plan import load_plan  # noqa: E402
from tests.smtp_server import free_port  # noqa: E402


class Arrivals:
    """Records (recipient, step, monotonic time) for each message the server accepts."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, float, bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.monotonic()
        content = envelope.original_content or b""
        step = re.search(rb"X-Campaign-Step: \S+/(\S+)", content)
        with self.lock:
            self.items.append(
                (
                    envelope.rcpt_tos[0],
                    step.group(1).decode() if step else "confirmation",
                    arrived,
                    content,
                )
            )
        return "250 OK"

    def wait_for(self, recipient: str, step: str, timeout: float = 30) -> tuple[float, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for to, kind, arrived, content in self.items:
                    if to == recipient and kind == step:
                        return arrived, content
            time.sleep(0.001)
        raise SystemExit(f"no {step} email for {recipient} within {timeout} s")


def confirm_path(content: bytes, base: str) -> str:
    message = message_from_bytes(content, policy=policy.default)
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(rf"{re.escape(base)}(/confirm/[A-Za-z0-9_.=-]+)", text)
    if not found:
        raise SystemExit("no confirmation link in the email")
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (default: temp SQLite)")
    parser.add_argument("--background", type=int, default=0, help="emails due in a bulk pass")
    parser.add_argument(
        "--background-day",
        type=int,
        default=1,
        metavar="D",
        help="plan day of the bulk pass's step (default 1: a morning's lessons)",
    )
    parser.add_argument("--connections", type=int, default=1, help="SMTP_CONNECTIONS")
    parser.add_argument("--processes", type=int, default=1, help="SENDER_PROCESSES (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with scratch_database(args.database, "latency") as url:
        latencies, bulk_sent = measure(
            url,
            args.count,
            args.background,
            args.connections,
            args.background_day,
            args.processes,
        )
    ordered = sorted(latencies)
    figures = {
        "database": "postgresql" if args.database else "sqlite",
        "confirmations": len(latencies),
        "background": args.background,
        "background_day": args.background_day,
        "connections": args.connections,
        "sender_processes": args.processes,
        "background_sent_meanwhile": bulk_sent,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000,
        "worst_ms": max(latencies) * 1000,
    }
    print(f"database          {figures['database']}")
    print(f"confirmations     {len(latencies)}")
    if args.background:
        print(f"bulk pass         {bulk_sent} of {args.background} sent while measuring")
    print(f"median            {figures['median_ms']:.1f} ms")
    print(f"p95               {figures['p95_ms']:.1f} ms")
    print(f"worst             {figures['worst_ms']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def measure(
    url: str, count: int, background: int, connections: int, day: int = 1, processes: int = 1
) -> tuple[list[float], int]:
    """Seconds from each confirmation click to the welcome email's 250, for `count` signups,
    and how many bulk emails the server accepted meanwhile."""
    arrivals = Arrivals()
    smtp_port, http_port = free_port(), free_port()
    controller = Controller(arrivals, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    base = f"http://127.0.0.1:{http_port}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SMTP_HOST": "127.0.0.1",
        **REAL_SENDER,
        "SMTP_PORT": str(smtp_port),
        "SMTP_SECURITY": "none",
        "SECRET_KEY": "latency-bench-secret-0123456789-0123456789",
        "PUBLIC_BASE_URL": base,
        "SIGNUP_RATE_PER_MINUTE": "10000",
        "LOG_LEVEL": "WARNING",
        "SMTP_CONNECTIONS": str(connections),
        "SENDER_PROCESSES": str(processes),
    }
    subprocess.run(
        [sys.executable, "-m", "campaign", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    if background:
        plan = load_plan(PLAN_PATH, TEMPLATES_DIR)
        load_campaign(
            url,
            subscribers=background,
            due=background,
            plan_id=plan.id,
            step_keys={step.day: step.key for step in plan.steps},
            now=SystemClock().now() - timedelta(minutes=1),
            due_day=day,
        )
    service = subprocess.Popen(
        [sys.executable, "run_scheduler.py", "--http", f"127.0.0.1:{http_port}"], env=env, cwd=ROOT
    )
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/subscribe")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            for n in range(count):
                email = f"signup{n}@example.org"  # bulk readers are reader<n>@
                client.post("/subscribe", data={"email": email, "first_name": "Reader"})
                _, content = arrivals.wait_for(email, "confirmation")
                path = confirm_path(content, base)
                clicked = time.monotonic()
                client.post(path)
                accepted, _ = arrivals.wait_for(email, "welcome")
                latencies.append(accepted - clicked)
    finally:
        service.terminate()
        service.wait(timeout=15)
        controller.stop()
    with arrivals.lock:
        bulk = sum(1 for to, *_ in arrivals.items if to.startswith("reader"))
    return latencies, bulk


if __name__ == "__main__":
    main()
