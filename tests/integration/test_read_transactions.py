"""Read-only transactions (`Database.read`) on a real database: a write inside one fails loudly
and leaves the connection writable, and on SQLite numbers and /healthz answer while another
writer holds the write lock instead of queueing behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import text

from campaign.engine import App, make_service
from campaign.insights import reports
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.web import create_app
from campaign.people import subscriptions
from campaign.storage import store
from campaign.storage.db import Database, WriteInReadTransaction
from campaign.storage.locks import WriteLock
from tests.conftest import ROOT, EngineFactory

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: Far below SQLite's busy timeout (30 s) and the forever a queued writer would wait.
PROMPTLY = 10.0

T = TypeVar("T")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _subscribe(db: Database, email: str) -> None:
    with db.transaction() as session:
        store.add_subscriber(
            session,
            email=email,
            first_name="Ann",
            timezone="UTC",
            status="active",
            source="test",
            now=NOW,
        )


def _first_names(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(text("SELECT first_name FROM subscribers")))


def test_a_write_inside_a_read_transaction_fails_loudly_and_changes_nothing(
    db: Database,
) -> None:
    """An UPDATE or an ORM insert inside `read()` raises WriteInReadTransaction on SQLite and
    PostgreSQL alike; nothing is written, and the connection writes again afterwards."""
    _subscribe(db, "ann@example.org")
    with pytest.raises(WriteInReadTransaction), db.read() as session:
        session.execute(text("UPDATE subscribers SET first_name = 'Bea'"))
    with pytest.raises(WriteInReadTransaction), db.read() as session:
        session.execute(text("DELETE FROM subscribers"))
    assert _first_names(db) == ["Ann"]
    with db.transaction() as session:  # the pooled connection is no longer read-only
        session.execute(text("UPDATE subscribers SET first_name = 'Cy'"))
    assert _first_names(db) == ["Cy"]


def test_a_writer_commits_while_a_read_is_open(db: Database) -> None:
    """A read holds no lock a writer waits for: a write transaction (here in the same thread)
    commits while the read is open, and the read goes on."""
    _subscribe(db, "ann@example.org")
    with db.read() as session:
        assert session.scalar(text("SELECT count(*) FROM subscribers")) == 1
        _subscribe(db, "bea@example.org")
        # 1 on SQLite (a snapshot), 2 on PostgreSQL (read committed, as before)
        assert session.scalar(text("SELECT count(*) FROM subscribers")) in (1, 2)
    assert len(_first_names(db)) == 2


def _promptly(read: Callable[[], T]) -> T:
    """`read()`'s result, from another thread: a TimeoutError if it waits for a lock."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(read).result(timeout=PROMPTLY)
    finally:
        pool.shutdown(wait=False)  # a read stuck on the lock ends once the test lets it go


def _get(asgi: httpx.ASGITransport, path: str) -> httpx.Response:
    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=asgi, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(fetch())


def _public(app: App) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))


def _admin(app: App) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_admin_app(app))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_numbers_and_metrics_answer_while_another_writer_holds_sqlite_write_lock(
    engine: EngineFactory, database_url: str
) -> None:
    """While another engine's writer is inside its transaction (its file lock and BEGIN
    IMMEDIATE held, a change not yet committed), stats, /metrics and an export answer at
    once, from the last committed state."""
    app, _ = engine(NOW)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=NOW
    )
    writer = Database(database_url)  # as in another process: a write lock of its own
    try:
        with writer.transaction() as session:
            session.execute(text("UPDATE subscribers SET status = 'unsubscribed'"))
            numbers = _promptly(lambda: reports.stats(app.db, app.plan))
            metrics = _promptly(lambda: _get(_admin(app), "/metrics"))
            exported = _promptly(lambda: subscriptions.export_person(app.db, "ann@example.org"))
    finally:
        writer.dispose()
    assert numbers["subscribers"]["active"] == 1
    assert metrics.status_code == 200
    assert 'campaign_subscribers{status="active"} 1.0' in metrics.text
    assert exported["subscriber"]["status"] == "active"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_healthz_answers_while_the_engine_writers_queue_is_held(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """/healthz (public and operators') does not queue behind the engine's writers: with the
    writers' file lock held elsewhere, it answers ok at once; SQLite's own lock is free, so
    its check that a writer could begin passes."""
    app, _ = engine(NOW)
    make_service(app).run_pass(NOW)  # a heartbeat: health is "ok"
    held_elsewhere = WriteLock(tmp_path / "campaign.db")
    try:
        with held_elsewhere.held():
            public = _promptly(lambda: _get(_public(app), "/healthz"))
            detailed = _promptly(lambda: _get(_admin(app), "/healthz"))
    finally:
        held_elsewhere.close()
    assert (public.status_code, public.json()["reason"]) == (200, "ok")
    assert (detailed.status_code, detailed.json()["reason"]) == (200, "ok")
