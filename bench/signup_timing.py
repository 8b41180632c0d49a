"""Does a signup's answer time tell whether an address is known? Median answer time of POST
/subscribe per address state, against the real service (`run_scheduler.py --http`) and a relay
that takes 40 ms per SMTP command (before issue 14: 4.5 ms for an active address, 130 ms for
a new one).

    .venv/bin/python bench/signup_timing.py                 # 60 rounds, SQLite
    .venv/bin/python bench/signup_timing.py --rounds 100 --database postgresql://postgres@127.0.0.1:5432/test

Each round signs up a fresh address ("new") and one address of every other state, in turn,
so the machine's load falls on every state alike; the confirmations go out meanwhile.
Prints the median and p90 per state and the largest gap between two medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import engine_env, scratch_database  # noqa: E402 - after the path is set
from tests.smtp_server import SMTPServer, free_port  # noqa: E402

STATES = {
    "pending": "pending@example.org",
    "active": "active@example.org",
    "unsubscribed": "gone@example.org",
    "bounced": "bounced@example.org",
    "suppressed": "complained@example.org",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--database", default=None, help="a PostgreSQL URL (default: SQLite)")
    parser.add_argument("--delay", type=float, default=0.040, help="relay seconds per command")
    args = parser.parse_args()
    with scratch_database(args.database, "signup-timing") as url:
        timings = run(url, args.rounds, args.delay)
    medians = {state: statistics.median(times) for state, times in timings.items()}
    for state, times in timings.items():
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{state:>13}: median {medians[state] * 1000:6.2f} ms   p90 {p90 * 1000:6.2f} ms")
    gap = max(medians.values()) - min(medians.values())
    print(f"largest gap between medians: {gap * 1000:.2f} ms ({len(timings['new'])} rounds)")


def run(url: str, rounds: int, delay: float) -> dict[str, list[float]]:
    smtp = SMTPServer()
    smtp.handler.command_delay = delay
    smtp.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = engine_env(
        url, smtp.port, PUBLIC_BASE_URL=base, SIGNUP_RATE_PER_MINUTE="10000", ADMIN_LISTEN="off"
    )
    for command in (
        ["db", "upgrade"],
        *(
            ["subscribe", e]
            for e in ("active@example.org", "gone@example.org", "bounced@example.org")
        ),
        ["unsubscribe", "gone@example.org"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "campaign", *command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"campaign {' '.join(command)}: {done.stderr}")
    smtp.handler.rcpt_replies["bounced@example.org"] = "550 5.1.1 no such user"
    service = subprocess.Popen(
        [sys.executable, "run_scheduler.py", "--http", f"127.0.0.1:{port}"], env=env, cwd=ROOT
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            _wait_until_up(http)
            time.sleep(3 + 8 * delay)  # the first pass: the welcome to bounced@ bounces
            http.post("/subscribe", data={"email": "pending@example.org"})
            _complain(url, "complained@example.org")
            return _measure(http, rounds)
    finally:
        service.terminate()
        service.wait(timeout=15)
        smtp.stop()


def _complain(url: str, email: str) -> None:
    """Suppress an address as a complaint does (only its hash is kept)."""
    from campaign.clock import SystemClock
    from campaign.domain.addresses import email_hash
    from campaign.domain.statuses import SuppressionReason
    from campaign.storage import store
    from campaign.storage.db import Database

    db = Database(url)
    with db.transaction() as session:
        store.suppress(
            session, email_hash(email), SuppressionReason.COMPLAINED, SystemClock().now()
        )
    db.dispose()


def _wait_until_up(http: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            http.get("/subscribe")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _measure(http: httpx.Client, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"new": [], **{state: [] for state in STATES}}
    for n in range(rounds):
        for state in timings:
            email = f"new-{n}@example.org" if state == "new" else STATES[state]
            started = time.perf_counter()
            answer = http.post("/subscribe", data={"email": email})
            timings[state].append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
    return timings


if __name__ == "__main__":
    main()
