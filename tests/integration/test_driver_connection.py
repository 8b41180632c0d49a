"""The per-email records' own connection (campaign.storage.fast_path.DriverConnection) on a
real database: all or nothing, instants stored as the ORM stores them, and a lost connection
replaced; and `PlainSQL.any_of`, the claim batch's lists, alike on both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import select

from campaign.errors import DatabaseError
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.fast_path import DriverConnection, PlainSQL
from campaign.storage.models import Subscriber

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
RENAME = "UPDATE subscribers SET first_name = :name WHERE id = :id"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _subscriber(db: Database) -> int:
    with db.transaction() as session:
        return store.add_subscriber(
            session,
            email="ann@example.org",
            first_name="Ann",
            timezone="UTC",
            status="active",
            source="test",
            now=NOW,
        )


def _first_name(db: Database, subscriber_id: int) -> str:
    with db.transaction() as session:
        return session.scalars(
            select(Subscriber.first_name).where(Subscriber.id == subscriber_id)
        ).one()


def test_a_failed_statement_undoes_the_whole_transaction(db: Database) -> None:
    subscriber_id = _subscriber(db)
    driver = DriverConnection(db)
    with pytest.raises(Exception, match="no_such_table"):
        driver.run(
            [(RENAME, {"name": "Bea", "id": subscriber_id}), ("SELECT x FROM no_such_table", {})]
        )
    assert _first_name(db, subscriber_id) == "Ann"
    driver.run([(RENAME, {"name": "Cy", "id": subscriber_id})])  # still usable
    assert _first_name(db, subscriber_id) == "Cy"
    driver.close()


def test_an_instant_written_through_the_driver_reads_and_compares_as_the_orms(
    db: Database,
) -> None:
    """SQLite keeps instants as text: a whole second written by the driver must still sort
    and compare equal to the same instant bound by SQLAlchemy (e.g. a 07:00:00 due time)."""
    subscriber_id = _subscriber(db)
    driver = DriverConnection(db)
    driver.run(
        [
            (
                "UPDATE subscribers SET updated_at = :at WHERE id = :id",
                {"at": NOW.replace(tzinfo=None), "id": subscriber_id},
            )
        ]
    )
    driver.close()
    with db.transaction() as session:
        row = session.get(Subscriber, subscriber_id)
        assert row is not None
        assert row.updated_at == NOW
        for equal in (Subscriber.updated_at <= NOW, Subscriber.updated_at >= NOW):
            assert session.scalars(select(Subscriber.id).where(equal)).all() == [subscriber_id]
        after = select(Subscriber.id).where(Subscriber.updated_at > NOW)
        assert session.scalars(after).all() == []


def test_each_statement_answers_for_itself_on_one_connection(db: Database) -> None:
    """On PostgreSQL one cursor serves every statement of the connection: a statement with
    no rows must not answer with the row of the one before it, nor after a return to the
    pool."""
    subscriber_id = _subscriber(db)
    driver = DriverConnection(db)
    renamed = RENAME + " RETURNING first_name"
    assert (
        driver.run([("SELECT first_name FROM subscribers WHERE id = :id", {"id": subscriber_id})])
        == "Ann"
    )
    assert driver.run([(RENAME, {"name": "Bea", "id": subscriber_id})]) is None
    assert driver.run([(renamed, {"name": "Cy", "id": subscriber_id + 1})]) is None
    assert driver.run_all([(renamed, {"name": "Cy", "id": subscriber_id})]) == [("Cy",)]
    driver.close()
    assert driver.run([(RENAME, {"name": "Di", "id": subscriber_id})]) is None
    assert driver.run_all(
        [(renamed, {"name": "Ed", "id": subscriber_id}), (RENAME, {"name": "Fe", "id": 0})]
    ) == [("Ed",), None]
    driver.close()
    assert _first_name(db, subscriber_id) == "Ed"


def _subscribers(db: Database, count: int) -> list[int]:
    with db.transaction() as session:
        return [
            store.add_subscriber(
                session,
                email=f"reader{n}@example.org",
                first_name=f"Reader{n}",
                timezone="UTC",
                status="active",
                source="test",
                now=NOW,
            )
            for n in range(count)
        ]


def test_the_writes_of_many_threads_each_answer_for_themselves(db: Database) -> None:
    """16 connections writing at once (SQLite commits them in batches): every write returns
    its own row, and every one is kept."""
    ids = _subscribers(db, 16)
    start = threading.Barrier(len(ids))
    wrong: list[str] = []

    def writer(subscriber_id: int) -> None:
        driver = DriverConnection(db)
        start.wait(10)
        for n in range(25):
            name = f"S{subscriber_id}-{n}"
            got = driver.run_all(
                [(RENAME + " RETURNING first_name", {"name": name, "id": subscriber_id})]
            )
            if got != [(name,)]:
                wrong.append(f"{name}: {got}")
        driver.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert wrong == []
    assert [_first_name(db, i) for i in ids] == [f"S{i}-24" for i in ids]


def test_a_write_refused_for_its_row_fails_its_writer_alone(db: Database) -> None:
    """Among writes committed together, one that breaks a constraint is refused to its own
    writer only; the others' writes are kept."""
    ids = _subscribers(db, 4)
    results: dict[int, object] = {}
    combined = db.combined_writes

    def writer(subscriber_id: int, status: str) -> None:
        driver = DriverConnection(db)
        try:
            results[subscriber_id] = driver.run(
                [
                    (RENAME, {"name": "Kept", "id": subscriber_id}),
                    (
                        "UPDATE subscribers SET status = :status WHERE id = :id RETURNING id",
                        {"status": status, "id": subscriber_id},
                    ),
                ]
            )
        except Exception as exc:
            results[subscriber_id] = exc
        finally:
            driver.close()

    threads = [
        threading.Thread(target=writer, args=(i, "no-such-status" if n == 2 else "active"))
        for n, i in enumerate(ids)
    ]
    with db.writing():  # on SQLite, they queue while this holds the write lock
        # The first two: one runs a batch of its own write (held back here), one queues;
        # then the rest queue too, and the next batch holds three writes, the refused one.
        for thread in threads[:2]:
            thread.start()
        if combined is not None:
            _until(lambda: combined.waiting == 1)
        for thread in threads[2:]:
            thread.start()
        if combined is not None:
            _until(lambda: combined.waiting == 3)
    for thread in threads:
        thread.join(timeout=60)
    refused = results.pop(ids[2])
    assert isinstance(refused, Exception)
    assert "status" in str(refused).lower()
    assert results == {i: i for i in ids if i != ids[2]}
    assert [_first_name(db, i) for i in ids] == ["Kept", "Kept", "Reader2", "Kept"]


def _until(condition: Callable[[], bool]) -> None:
    """Wait for other threads to reach a point (not for a schedule): at most 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the other threads never got there"
        time.sleep(0.001)


def test_a_lost_server_connection_is_reported_then_replaced(
    db: Database, database_url: str
) -> None:
    if db.is_sqlite:
        pytest.skip("about a database server's connection: PostgreSQL only")
    driver = DriverConnection(db)
    backend = driver.run([("SELECT pg_backend_pid()", {})])
    with psycopg.connect(database_url.split("?")[0], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    with pytest.raises(DatabaseError):
        driver.run([("SELECT 1", {})])
    assert driver.run([("SELECT 1", {})]) == 1
    assert driver.run([("SELECT pg_backend_pid()", {})]) != backend
    driver.close()


@pytest.mark.parametrize(
    ("column", "values", "negated", "expected"),
    [
        ("id", [1, 3], False, ["a@example.org", "c@example.org"]),
        ("id", [2, 40_000, 5_000_000_000], False, ["b@example.org"]),  # past smallint, int
        ("id", [], False, []),
        ("id", [], True, ["a@example.org", "b@example.org", "c@example.org"]),
        ("email", {"c@example.org", "x@example.org"}, False, ["c@example.org"]),
        ("email", ["a@example.org"], True, ["b@example.org", "c@example.org"]),
        ("email", ["o'hara@example.org", "%(id)s"], False, []),  # values, never SQL
    ],
)
def test_one_of_a_list_matches_alike_on_both_databases(
    db: Database, column: str, values: object, negated: bool, expected: list[str]
) -> None:
    with db.transaction() as session:
        ids = [
            store.add_subscriber(
                session,
                email=f"{name}@example.org",
                first_name="",
                timezone="UTC",
                status="active",
                source="test",
                now=NOW,
            )
            for name in "abc"
        ]
    assert ids == [1, 2, 3]  # a fresh table: the cases name these ids
    with db.transaction() as session:
        sql = PlainSQL(session)
        params: dict[str, object] = {}
        where = sql.any_of(column, "v", values, params, negated=negated)  # type: ignore[arg-type]
        select_sql = f"SELECT email FROM subscribers WHERE {where} ORDER BY id"  # noqa: S608
        rows = sql.rows(select_sql, params)
    assert [row[0] for row in rows] == expected
