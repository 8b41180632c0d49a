"""What outgoing webhooks add to recording a 250: the recorder's transaction timed alone, with
no endpoint and with one endpoint taking delivery.sent (which writes the event in it).

    .venv/bin/python bench/webhook_outbox.py [--count 2000] [--database postgresql://...]

Prints the median and 90th percentile per record, in microseconds, for each case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402 - after the path is set
from campaign.storage import store  # noqa: E402
from campaign.storage.db import Database  # noqa: E402
from campaign.storage.models import Delivery  # noqa: E402
from campaign.storage.store import webhooks  # noqa: E402

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def claims(db: Database, count: int, prefix: str) -> list[store.Claim]:
    """`count` queued welcome deliveries of fresh subscribers, as claims."""
    made = []
    with db.transaction() as session:
        for n in range(count):
            email = f"{prefix}{n}@example.org"
            subscriber = store.add_subscriber(
                session,
                email=email,
                first_name="",
                timezone="UTC",
                status="active",  # type: ignore[arg-type]  # a SubscriberStatus value
                source="bench",
                now=NOW,
            )
            enrollment = store.enrol(session, subscriber, "bench", NOW)
            assert enrollment is not None
            delivery = Delivery(
                enrollment_id=enrollment,
                step_key="welcome",
                status="queued",
                attempts=0,
                message_id=f"<{prefix}{n}@example.org>",
                created_at=NOW,
                updated_at=NOW,
            )
            session.add(delivery)
            session.flush()
            made.append(
                store.Claim(
                    delivery.id,
                    delivery.message_id,
                    0,
                    enrollment,
                    "welcome",
                    0,
                    NOW,
                    NOW,
                    None,
                    subscriber,
                    email,
                    "",
                    "UTC",
                    "bench",
                )
            )
    return made


def timed(db: Database, batch: list[store.Claim]) -> list[float]:
    seconds = []
    with store.DeliveryRecorder(db) as recorder:
        for claim in batch:
            started = time.perf_counter()
            recorder.record_sent(store.Accepted(claim, NOW, None))
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (default: temp SQLite)")
    args = parser.parse_args()
    with scratch_database(args.database, "outbox") as url:
        db = Database(url)
        db.upgrade()
        without = claims(db, args.count, "a")
        with_endpoint = claims(db, args.count, "b")
        results = {"no endpoint": timed(db, without)}
        with db.transaction() as session:
            webhooks.add_endpoint(session, "https://hooks.example.org/", "whsec_AAAA", "*", NOW)
        results["1 endpoint"] = timed(db, with_endpoint)
        db.dispose()
    print(f"database {'postgresql' if args.database else 'sqlite'}, {args.count} records each")
    for name, seconds in results.items():
        ordered = sorted(seconds)
        median = statistics.median(ordered) * 1e6
        p90 = ordered[int(len(ordered) * 0.9)] * 1e6
        print(f"{name:12}  median {median:6.0f} us  p90 {p90:6.0f} us")


if __name__ == "__main__":
    main()
