"""The operators' console pages at a million subscribers: how long each page's queries (and,
when the console app is there, the whole page) take on PostgreSQL.

    .venv/bin/python bench/console_pages.py                         # 1M subscribers, 20 runs
    .venv/bin/python bench/console_pages.py --subscribers 100000 --runs 50
    .venv/bin/python bench/console_pages.py --keep bench_console    # load once, keep the schema
    .venv/bin/python bench/console_pages.py --reuse bench_console   # and measure it again

The list is built inside PostgreSQL (INSERT ... SELECT over generate_series, not timed): varied
names and addresses (so that a prefix matches a realistic share), one enrollment each spread
over the thirty-day plan, the full delivery log of every step each has reached (about 15
deliveries a subscriber), a click on one delivery in twenty, 3% unsubscribed and 1% bounced.

Each measurement runs once cold (not counted) and then `--runs` times; the table gives the
median and p95 in milliseconds. The target from the console issue: < 200 ms a page.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    NOW,
    PLAN_PATH,
    TEMPLATES_DIR,
    engine_env,
    load_average,
    machine,
    print_machine,
)
from campaign.clock import FixedClock  # noqa: E402
from campaign.delivery.testing import RecordingTransport  # noqa: E402
from campaign.domain.plan import load_plan  # noqa: E402
from campaign.engine import Engine  # noqa: E402
from campaign.errors import BadInput  # noqa: E402
from campaign.insights import plan_page  # noqa: E402
from campaign.interfaces.admin import create_admin_app  # noqa: E402
from campaign.people import csv_import, directory, import_preview, operators  # noqa: E402
from campaign.settings import Settings  # noqa: E402
from campaign.storage.db import Database  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
FIRST = [
    "Ann",
    "Anna",
    "Bob",
    "Carla",
    "Chen",
    "David",
    "Eva",
    "Fatima",
    "Georg",
    "Hana",
    "Ivan",
    "Jana",
    "Karl",
    "Lena",
    "Maria",
    "Mohammed",
    "Nora",
    "Olga",
    "Paul",
    "Petra",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomás",
    "Ulla",
    "Vera",
    "Wei",
    "Xenia",
    "Yusuf",
    "Zoë",
]
LAST = [
    "smith",
    "mueller",
    "garcia",
    "rossi",
    "kowalski",
    "nguyen",
    "tanaka",
    "silva",
    "ivanova",
    "jensen",
    "dubois",
    "martin",
    "novak",
    "horvat",
    "papadopoulos",
    "kim",
    "schmidt",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "hoffmann",
    "fischer",
]
DOMAINS = ("example.org", "mail.example.com", "example.net", "posteo.example", "web.example")


def address(n: int) -> str:
    """Subscriber `n`'s address, as `load` builds it."""
    first, last = FIRST[n % len(FIRST)].lower(), LAST[(n // 7) % len(LAST)]
    return f"{first}.{last}{n}@{DOMAINS[(n // 3) % len(DOMAINS)]}"


def _array(items: tuple[str, ...] | list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + item.replace("'", "''") + "'" for item in items) + "]"


def load(url: str, subscribers: int, plan_id: str, step_keys: list[str]) -> None:
    """The list, built by PostgreSQL itself: see the module docstring."""
    first, last, domains, keys = _array(FIRST), _array(LAST), _array(DOMAINS), _array(step_keys)
    steps = len(step_keys)
    now = NOW.replace(tzinfo=None).isoformat(sep=" ")
    # The bench's own constants only, formatted into SQL.
    statements = [
        f"""INSERT INTO subscribers (id, email, first_name, timezone, status, source,
            created_at, updated_at, confirmed_at, unsubscribed_at)
        SELECT n,
            lower(({first})[1 + n % {len(FIRST)}]) || '.' || ({last})[1 + (n / 7) % {len(LAST)}]
                || n || '@' || ({domains})[1 + (n / 3) % {len(DOMAINS)}],
            ({first})[1 + n % {len(FIRST)}], 'Europe/Berlin',
            CASE WHEN n % 100 < 3 THEN 'unsubscribed' WHEN n % 100 = 3 THEN 'bounced'
                ELSE 'active' END, 'bench',
            TIMESTAMP '{now}' - make_interval(days => n % {steps}, mins => 10),
            TIMESTAMP '{now}', TIMESTAMP '{now}' - make_interval(days => n % {steps}),
            CASE WHEN n % 100 < 3 THEN TIMESTAMP '{now}' - make_interval(hours => n % 40)
                END
        FROM generate_series(1, {subscribers}) AS n""",  # noqa: S608 - constants
        f"""INSERT INTO enrollments (id, subscriber_id, plan_id, status, started_at, last_day,
            next_due_at, last_sent_at, updated_at)
        SELECT n, n, '{plan_id}',
            CASE WHEN n % 100 < 4 THEN 'cancelled' WHEN n % {steps} = {steps - 1}
                THEN 'completed' ELSE 'active' END,
            TIMESTAMP '{now}' - make_interval(days => n % {steps}, mins => 10), n % {steps},
            CASE WHEN n % 100 >= 4 AND n % {steps} < {steps - 1}
                THEN TIMESTAMP '{now}' + make_interval(secs => 60 + n % 86400) END,
            TIMESTAMP '{now}' - make_interval(hours => 20), TIMESTAMP '{now}'
        FROM generate_series(1, {subscribers}) AS n""",  # noqa: S608 - constants
        f"""INSERT INTO deliveries (enrollment_id, step_key, status, attempts, last_error,
            message_id, unknown_outcomes, created_at, updated_at, sent_at)
        SELECT e.id, ({keys})[1 + d],
            CASE WHEN e.id % 100 = 3 AND d = e.last_day THEN 'bounced'
                WHEN (e.id + d) % 97 = 0 THEN 'failed'
                WHEN (e.id + d) % 89 = 0 THEN 'skipped' ELSE 'sent' END, 1,
            CASE WHEN e.id % 100 = 3 AND d = e.last_day
                    THEN '550 5.1.1 <x>: Recipient address rejected: User unknown'
                WHEN (e.id + d) % 97 = 0 THEN '554 5.7.1 message refused'
                WHEN (e.id + d) % 89 = 0 THEN 'subscriber left' END,
            '<b' || e.id || '.' || d || '@example.org>', 0,
            e.started_at + make_interval(days => d), e.started_at + make_interval(days => d),
            e.started_at + make_interval(days => d, mins => 1)
        FROM enrollments AS e, generate_series(0, e.last_day) AS d""",  # noqa: S608
        """INSERT INTO clicks (delivery_id, url, url_hash, at)
        SELECT id, 'https://example.org/lesson', md5(id::text) || md5(id::text),
            sent_at + interval '2 hours'
        FROM deliveries WHERE id % 20 = 0 AND status = 'sent'""",
    ]
    with psycopg.connect(url) as connection:
        for statement in statements:
            started = time.monotonic()
            connection.execute(statement)
            table = statement.split()[2]
            print(f"  loaded {table:<12} in {time.monotonic() - started:6.1f} s", flush=True)
        for table in ("subscribers", "enrollments", "deliveries", "clicks"):
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - constants
                f" (SELECT coalesce(max(id), 1) FROM {table}))"
            )
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


@contextmanager
def schema(base: str, *, keep: str | None, reuse: str | None) -> Iterator[tuple[str, bool]]:
    """(URL, whether it needs loading) of the schema measured; dropped unless kept."""
    name = reuse or keep or f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{base}?options=-csearch_path%3D{name}"
    if reuse is None:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            connection.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield url, reuse is None
    finally:
        if keep is None and reuse is None:
            with psycopg.connect(base, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{name}" CASCADE')


def timed(work: Callable[[], Any], runs: int) -> list[float]:
    """Milliseconds of each of `runs` calls, after one cold call that is not counted."""
    work()
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        found.append((time.perf_counter() - started) * 1000)
    return found


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


Measurement = tuple[str, Callable[[], Any], int | None]


def measurements(app: Engine, subscribers: int) -> list[Measurement]:
    """(what, a call, how many runs: None for --runs) for each page's work."""
    db: Database = app.db
    picks = random.Random(17)
    found: list[Measurement] = []

    def search(query: str, cursor: str | None = None) -> Callable[[], Any]:
        return lambda: directory.search(db, query, cursor)

    for query in ("", "a", "ann", "zoë", "ann.garcia1", "nobody-by-that-name", "reader@"):
        found.append((f"search {query!r}", search(query), None))
    second = directory.search(db, "a").next_cursor
    found.append(("search 'a', page 2", search("a", second), None))
    deep = directory.search(db, "s")
    for _ in range(20):  # twenty pages in
        deep = directory.search(db, "s", deep.next_cursor)
    found.append(("search 's', page 21", search("s", deep.next_cursor), None))
    name_page = directory.search(db, "zoë")
    found.append(("search 'zoë', page 2 (names)", search("zoë", name_page.next_cursor), None))
    found.append(
        ("subscriber record", lambda: directory.person(db, picks.randint(1, subscribers)), None)
    )
    cache = plan_page.NumbersCache()
    now = app.clock.now()
    cache.stats(db, app.content, now)
    cache.join()  # what the page shows once the first count (in the background) is done
    counting = lambda: plan_page.timeline(db, app.content, now, type(cache)(wait=True))  # noqa: E731
    found.append(("plan numbers, counted (cold)", counting, 2))
    found.append(
        (
            "plan timeline, numbers kept",
            lambda: plan_page.timeline(db, app.content, now, cache),
            None,
        )
    )
    keys = [step.key for step in app.plan.steps]
    found.append(
        ("step preview", lambda: plan_page.preview(app.content, picks.choice(keys), now), None)
    )
    csv_file = Path(tempfile.mkdtemp(prefix="console-bench-")) / "list.csv"
    with csv_file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name"])
        for n in range(1000):  # half known already, half new
            known = n % 2 == 0 and n < subscribers
            email = address(n + 1) if known else f"new{n}@example.org"
            writer.writerow([email, "Ann"])

    def preview_import() -> Any:
        source = csv_import.open_csv(csv_file)
        return import_preview.preview_rows(db, csv_import.rows(source))

    found.append(("import preview, 1000 rows", preview_import, None))
    return found


def page_measurements(app: Engine, subscribers: int) -> list[Measurement]:
    """Whole pages, through the operators' application (sign-in check, query, template)."""
    client = PageClient(create_admin_app(app))
    with contextlib.suppress(BadInput):  # the account is kept from an earlier run (--reuse)
        operators.add_operator(app.db, "bench@example.org", "bench-password-123", NOW)
    client.sign_in("bench@example.org", "bench-password-123")
    picks = random.Random(18)
    keys = [step.key for step in app.plan.steps]
    after = directory.search(app.db, "a").next_cursor or ""

    started = time.monotonic()
    while "being counted" in client.get("/console/plan").text:  # the first count, once
        if time.monotonic() - started > 600:
            raise SystemExit("the plan's numbers took more than 10 minutes to count")
        time.sleep(1)
    print(
        f"  (the console's first count of the plan's numbers: {time.monotonic() - started:.0f} s)"
    )

    def get(path: str | Callable[[], str]) -> Callable[[], Any]:
        return lambda: client.get(path() if callable(path) else path)

    return [
        ("page /subscribers?q=ann", get("/console/subscribers?q=ann"), None),
        ("page /subscribers?q=zoë", get("/console/subscribers?q=zo%C3%AB"), None),
        ("page /subscribers?q=a, page 2", get(f"/console/subscribers?q=a&cursor={after}"), None),
        (
            "page /subscribers/{id}",
            get(lambda: f"/console/subscribers/{picks.randint(1, subscribers)}"),
            None,
        ),
        ("page /plan (numbers kept)", get("/console/plan"), None),
        ("page /plan/{key}", get(lambda: f"/console/plan/{picks.choice(keys)}"), None),
        (
            "page /plan/{key}/email.html",
            get(lambda: f"/console/plan/{picks.choice(keys)}/email.html"),
            None,
        ),
    ]


class PageClient:
    """Requests to the console's ASGI application in this process (no socket): what a page
    costs the server, not the network."""

    def __init__(self, asgi: Any) -> None:
        self.transport = httpx.ASGITransport(app=asgi)
        self.cookies = httpx.Cookies()

    def get(self, path: str) -> httpx.Response:
        return self._send("GET", path)

    def sign_in(self, email: str, password: str) -> None:
        form = self._send("GET", "/console/login").text
        token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        data = {"email": email, "password": password, "csrf_token": token}
        self._send("POST", "/console/login", data=data)

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self.transport, base_url="https://bench", cookies=self.cookies
            ) as client:
                answer = await client.request(method, path, **options)
                self.cookies = client.cookies
                if answer.status_code >= 400 or (method == "GET" and answer.status_code != 200):
                    raise SystemExit(f"{method} {path}: {answer.status_code}")
                return answer

        return asyncio.run(send())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=POSTGRES, help="a PostgreSQL URL")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", metavar="SCHEMA", help="load into SCHEMA and keep it")
    parser.add_argument("--reuse", metavar="SCHEMA", help="measure SCHEMA as loaded before")
    args = parser.parse_args()
    plan = load_plan(PLAN_PATH, TEMPLATES_DIR)
    print_machine(machine([args.database]))
    with schema(args.database, keep=args.keep, reuse=args.reuse) as (url, fresh):
        if fresh:
            Database(url).upgrade()
            print(f"loading {args.subscribers:,} subscribers ...", flush=True)
            load(url, args.subscribers, plan.id, [step.key for step in plan.steps])
        settings = Settings.from_env(engine_env(url))
        with Engine.from_settings(
            settings, clock=FixedClock(NOW), transport=RecordingTransport()
        ) as app:
            with app.db.read() as session:
                counts = {
                    table: session.connection()
                    .exec_driver_sql(
                        f"SELECT count(*) FROM {table}"  # noqa: S608 - constants
                    )
                    .scalar()
                    for table in ("subscribers", "deliveries", "clicks")
                }
            print("rows              " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
            print(f"\n{'what':<34} {'runs':>5} {'p50 ms':>8} {'p95 ms':>8}")
            table = measurements(app, args.subscribers) + page_measurements(app, args.subscribers)
            for name, work, runs in table:
                found = timed(work, runs or args.runs)
                print(
                    f"{name:<34} {len(found):>5} {statistics.median(found):>8.1f}"
                    f" {p95(found):>8.1f}",
                    flush=True,
                )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
