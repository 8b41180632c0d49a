"""The claim query finds due work through indexes on both databases: a change to the query or
the schema that makes it read a whole table fails here, not at a million subscribers.

The plans are those of the very statements `store.claim_due` sends (captured as it runs, then
rolled back), over a list where few of many enrollments are due; PostgreSQL has statistics
(ANALYZE) as autovacuum would give it; SQLite has none, as in production.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert
from sqlalchemy.orm import Session

from campaign.domain.plan import load_plan
from campaign.people import subscriptions
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.models import Delivery, Enrollment, Subscriber
from tests.conftest import ROOT, EngineFactory
from tests.smtp_server import SMTPServer

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
SUBSCRIBERS = 20_000
DUE = 2_000  # ten times a batch, as 10,000 due are fifty batches
BATCH = 200
PLAN = load_plan(ROOT / "plans" / "thirty_day.yaml", ROOT / "templates" / "emails")
#: A whole-table read: SQLite's "SCAN t" without an index, PostgreSQL's "Seq Scan on t".
FULL_SCAN = re.compile(r"^(SCAN|Seq Scan on) (\w+)(?! USING (COVERING )?INDEX)")


@pytest.fixture
def loaded(database_url: str) -> Iterator[Database]:
    """`SUBSCRIBERS` enrolled readers who had their welcome email: `DUE` are due their next
    one now, the rest later or never (finished)."""
    db = Database(database_url)
    subscribers, enrollments, deliveries = [], [], []
    for n in range(1, SUBSCRIBERS + 1):
        subscribers.append(
            {
                "id": n,
                "email": f"r{n}@example.org",
                "first_name": "",
                "timezone": "UTC",
                "status": "active",
                "source": "test",
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        finished = n > DUE and n % 5 == 0
        due = NOW - timedelta(seconds=n) if n <= DUE else NOW + timedelta(seconds=n)
        enrollments.append(
            {
                "id": n,
                "subscriber_id": n,
                "plan_id": PLAN.id,
                "started_at": NOW,
                "updated_at": NOW,
                "status": "completed" if finished else "active",
                "last_day": 30 if finished else 0,
                "next_due_at": None if finished else due,
            }
        )
        deliveries.append(
            {
                "enrollment_id": n,
                "step_key": PLAN.steps[0].key,
                "status": "sent",
                "attempts": 1,
                "message_id": f"<{n}@example.org>",
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    with db.engine.begin() as connection:
        connection.execute(insert(Subscriber), subscribers)
        connection.execute(insert(Enrollment), enrollments)
        connection.execute(insert(Delivery), deliveries)
    if not db.is_sqlite:
        with db.engine.begin() as connection:  # statistics roll back with a transaction too
            connection.exec_driver_sql("ANALYZE")
    yield db
    db.dispose()


def _claim_statements(db: Database, limit: int = BATCH) -> list[tuple[str, Any]]:
    """The SELECT and UPDATE statements of one `claim_due` call, with their parameters."""
    sent: list[tuple[str, Any]] = []
    numbers = itertools.count()
    with db.engine.connect() as connection:

        def keep(conn: Connection, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().startswith(("SELECT", "UPDATE")):
                sent.append((statement, params))

        event.listen(connection, "before_cursor_execute", keep)
        transaction = connection.begin()
        with Session(bind=connection) as session:
            claims = store.claim_due(
                session,
                plans={PLAN.id: [(s.key, s.day) for s in PLAN.steps]},
                now=NOW,
                owner="test",
                lease_until=NOW + timedelta(minutes=5),
                limit=limit,
                new_message_id=lambda: f"<claim-{next(numbers)}@example.org>",
            )
        transaction.rollback()
    assert len(claims) == limit
    return sent


def _plan(db: Database, statement: str, params: Any) -> list[str]:
    """The plan's lines: SQLite's EXPLAIN QUERY PLAN details, PostgreSQL's EXPLAIN nodes."""
    explain = "EXPLAIN QUERY PLAN" if db.is_sqlite else "EXPLAIN"
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"{explain} {statement}", params).all()
    if db.is_sqlite:
        return [str(row[-1]) for row in rows]
    return [str(row[0]).strip().removeprefix("->").strip() for row in rows]


def _full_scans(lines: list[str]) -> list[str]:
    return [line for line in lines if FULL_SCAN.match(line)]


def test_the_due_query_reaches_enrollments_by_an_index_in_due_order(loaded: Database) -> None:
    """The due-query (claim_due's first SELECT) reads enrollments through an index on their
    due time and subscribers by primary key: no table is read whole (and on SQLite, which has
    no statistics to weigh a sort against, the index order serves ORDER BY ... LIMIT)."""
    due_query, params = _claim_statements(loaded)[0]
    assert "FROM enrollments" in due_query
    lines = _plan(loaded, due_query, params)
    assert _full_scans(lines) == [], lines
    if loaded.is_sqlite:
        by_due_time = r"SEARCH enrollments USING (COVERING )?INDEX \w+ \(.*next_due_at<"
        assert any(re.match(by_due_time, line) for line in lines), lines
        assert not any("TEMP B-TREE" in line for line in lines), lines
    else:
        text = "\n".join(lines)
        by_index = re.search(r"Index (Only )?Scan using \w+ on enrollments", text)
        by_bitmap = "Bitmap Heap Scan on enrollments" in text and "Bitmap Index Scan" in text
        assert by_index or by_bitmap, text
        assert re.search(r"Index Cond: .*next_due_at <=", text), text


def test_every_select_and_update_of_a_claim_uses_an_index(loaded: Database) -> None:
    """Every statement a claim batch sends (due-query, delivery look-up, lease update) finds
    its rows through an index, so a batch costs the same at 20,000 subscribers as at 1M."""
    scans = {
        statement.split("WHERE")[0][:80]: found
        for statement, params in _claim_statements(loaded)
        if (found := _full_scans(_plan(loaded, statement, params)))
    }
    assert scans == {}


def test_a_claim_batch_of_any_size_sends_the_same_statements_on_postgresql(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL a batch's ids travel as one array, so its statements read the same for 7
    claims as for 200: psycopg converts each text once and PostgreSQL plans it once, not anew
    for every batch length (an IN list of up to 200 values did both for every batch)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite takes each value as a parameter of its own: PostgreSQL only")
    loaded: Database = request.getfixturevalue("loaded")

    small = [statement for statement, _ in _claim_statements(loaded, limit=7)]
    full = [statement for statement, _ in _claim_statements(loaded, limit=BATCH)]

    assert len(full) >= 4  # the due-query, the settling of removed steps, look-ups, the lease
    assert small == full


def _delivery_scans(db: Database) -> tuple[int, int]:
    """(sequential scans, rows updated) of the delivery log, as PostgreSQL's statistics say."""
    with db.engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT seq_scan, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'deliveries'"
            " AND schemaname = current_schema()"
        ).one()
    return int(row[0]), int(row[1])


def test_a_first_pass_over_an_imported_list_reads_no_table_whole_per_email(
    engine: EngineFactory, smtp_server: SMTPServer, database_url: str
) -> None:
    """A list imported into a fresh database, analysed while its delivery log is empty: the
    plans made then (and kept by prepared statements) must not read that log whole for each
    email as it grows."""
    if not database_url.startswith("postgresql"):
        pytest.skip("about PostgreSQL's planner statistics: PostgreSQL only")
    count = 300
    app, _ = engine(NOW)
    for n in range(count):
        subscriptions.subscribe(
            app.db, app.plan, email=f"i{n}@example.org", first_name="", timezone="UTC", now=NOW
        )
    with app.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")  # as autovacuum does after an import
    scans_before, _ = _delivery_scans(app.db)

    assert app.dispatcher.run_pass(NOW).sent == count
    app.db.dispose()  # each backend reports its statistics as it ends
    observer = Database(database_url)
    for _ in range(100):  # until every backend's report has landed: one update per email
        scans, updated = _delivery_scans(observer)
        if updated >= count:
            break
        threading.Event().wait(0.1)
    observer.dispose()

    assert updated >= count
    assert scans - scans_before < 20  # a few per batch at most, not one per email


def test_an_import_leaves_the_planner_knowing_the_lists_size(database_url: str) -> None:
    """After `import` PostgreSQL's statistics count the new subscribers and enrollments at
    once (without them, each claim batch of the first passes read every subscriber)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("about PostgreSQL's planner statistics: PostgreSQL only")
    db = Database(database_url)
    rows = [(n, {"email": f"p{n}@example.org", "timezone": "UTC"}) for n in range(1, 301)]
    report = subscriptions.import_rows(db, PLAN, rows, now=NOW)
    with db.engine.connect() as connection:
        counted = dict(
            connection.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class"
                " WHERE oid IN ('subscribers'::regclass, 'enrollments'::regclass)"
            ).all()
        )
    db.dispose()
    assert report.added == 300
    assert counted == {"subscribers": 300, "enrollments": 300}
