"""Walk the whole delivery log through the JSON API (`GET /api/v1/deliveries`, pages by cursor)
and time each page, on a log of N deliveries loaded in bulk.

    .venv/bin/python bench/api_deliveries.py --count 100000
    .venv/bin/python bench/api_deliveries.py --count 1000000 --database postgresql://postgres@127.0.0.1:5432/test

The operators' app runs in this process (httpx's ASGI transport: no sockets, so the figures are
the API's and the database's). Prints pages, the total, and the median, p95 and worst page.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    NOW,
    PLAN_PATH,
    TEMPLATES_DIR,
    database_kind,
    scratch_database,
)
from campaign.clock import FixedClock  # noqa: E402
from campaign.engine import build  # noqa: E402
from campaign.interfaces.admin import create_admin_app  # noqa: E402
from campaign.people import api_keys  # noqa: E402
from campaign.settings import Settings  # noqa: E402
from campaign.storage.db import Database  # noqa: E402

#: one welcome delivery per subscriber, every row sent: the shape of a log after a morning.
_FILL = (
    "INSERT INTO subscribers (email, first_name, timezone, status, source, created_at, "
    "updated_at) SELECT 'u' || g || '@example.org', '', 'UTC', 'active', 'bench', {now}, {now} "
    "FROM {series}",
    "INSERT INTO enrollments (subscriber_id, plan_id, status, started_at, last_day, updated_at) "
    "SELECT id, 'thirty-day-self-healing', 'active', {now}, 0, {now} FROM subscribers",
    "INSERT INTO deliveries (enrollment_id, step_key, status, attempts, message_id, "
    "unknown_outcomes, created_at, updated_at, sent_at) SELECT id, 'welcome', 'sent', 1, "
    "'<' || id || '@bench>', 0, {now}, {now}, {now} FROM enrollments",
)


def fill(url: str, count: int) -> None:
    """`count` subscribers, each with one enrollment and one sent delivery."""
    if database_kind(url) == "postgresql":
        base, _, options = url.partition("?options=-csearch_path%3D")
        with psycopg.connect(base, autocommit=True, options=f"-csearch_path={options}") as c:
            for statement in _FILL:
                c.execute(
                    statement.format(now="now()", series=f"generate_series(1, {count}) g").encode()
                )
            c.execute("ANALYZE")
        return
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:
        # `count` is an int from argparse: the query text holds nothing else from outside.
        series = (
            "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s "  # noqa: S608
            f"WHERE g < {int(count)}) SELECT g FROM s)"
        )
        for statement in _FILL:
            c.execute(statement.format(now="'2026-12-01 07:00:00'", series=series))
        c.execute("ANALYZE")


async def walk(app: object, token: str, limit: int) -> tuple[int, list[float]]:
    """Every delivery, page by page: how many were seen, and each page's seconds."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # an ASGI app
    headers = {"authorization": f"Bearer {token}"}
    seen, cursor, times = 0, "", []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        while True:
            params = {"limit": str(limit), **({"since": cursor} if cursor else {})}
            started = time.perf_counter()
            answer = await client.get("/api/v1/deliveries", params=params, headers=headers)
            times.append(time.perf_counter() - started)
            page = answer.json()
            seen, cursor = seen + len(page["items"]), page["next"]
            if not page["has_more"]:
                return seen, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--database", default=None, help="a PostgreSQL URL (default SQLite)")
    options = parser.parse_args()
    with scratch_database(options.database, "api") as url:
        Database(url).upgrade()
        fill(url, options.count)
        settings = Settings.from_env(
            {
                "DATABASE_URL": url,
                "PLAN_PATH": str(PLAN_PATH),
                "TEMPLATES_DIR": str(TEMPLATES_DIR),
                "API_RATE_PER_MINUTE": "1000000",
            }
        )
        app = build(settings, clock=FixedClock(NOW))
        try:
            token = api_keys.create(app.db, "bench", NOW).token
            started = time.perf_counter()
            seen, times = asyncio.run(walk(create_admin_app(app), token, options.limit))
            total = time.perf_counter() - started
        finally:
            app.close()
    assert seen == options.count, (seen, options.count)
    times.sort()
    print(
        f"{database_kind(url)}: {seen:,} deliveries in {len(times)} pages of {options.limit} "
        f"in {total:.2f} s; a page: median {times[len(times) // 2] * 1000:.1f} ms, "
        f"p95 {times[int(len(times) * 0.95)] * 1000:.1f} ms, worst {times[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
