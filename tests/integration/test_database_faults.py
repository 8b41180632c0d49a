"""A database that refuses writes (read-only after a failover, disk full, locked by another
process), on a real database and SMTP server: sending pauses with one log line, /healthz says
why, nothing is lost or sent twice, and sending resumes by itself on new connections."""

from __future__ import annotations

import asyncio
import logging
import pickle
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection, make_url

from campaign.engine import App, make_service
from campaign.errors import DatabaseRefusesWrites
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.web import create_app
from campaign.people import subscriptions
from campaign.storage.db import (
    DISK_FULL,
    LOCKED,
    READ_ONLY,
    READ_ONLY_FILE,
    Database,
    write_refusal,
)
from campaign.storage.fast_path import DriverConnection
from campaign.storage.models import Delivery
from tests.conftest import POSTGRES_URL, ROOT, EngineFactory, _migrate, sqlite_database
from tests.smtp_server import SMTPServer

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY_1 = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)  # subscribers in UTC: day 1 is due at 07:00
PEOPLE = [f"reader{n}@example.org" for n in range(6)]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Overrides conftest's: a migrated SQLite file, or a PostgreSQL *database* of its own
    (not a schema), since the test makes the whole database read-only."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
        return
    base = request.getfixturevalue("postgres_url")
    name = f"campaign_ro_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _admin(url: str, *statements: str) -> None:
    """Run `statements` about the database at `url` as the superuser, from the shared one."""
    name = make_url(url).database
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        for statement in statements:
            admin.execute(statement.format(name=name))  # names we made ourselves


def _fail_over_to_a_read_only_node(url: str) -> None:
    """New connections are read-only for their whole life, and the old ones are cut, as
    when the primary goes away and the address now leads to a node that refuses writes."""
    _admin(
        url,
        "ALTER DATABASE {name} SET default_transaction_read_only = on",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )


def _writes_come_back(url: str) -> None:
    """New connections write again; connections opened meanwhile stay read-only."""
    _admin(url, "ALTER DATABASE {name} RESET default_transaction_read_only")


def _subscribe(app: App, emails: list[str]) -> None:
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=NOW
        )


def _copies(smtp_server: SMTPServer) -> Counter[tuple[str, str]]:
    """How many times each (recipient, step) arrived."""
    return Counter(
        (r.recipients[0], str(r.message["X-Campaign-Step"]).rsplit("/", 1)[1])
        for r in smtp_server.received
    )


def _get(app: App, path: str) -> httpx.Response:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(fetch())


def _psycopg(connection: Connection) -> psycopg.Connection[Any]:
    """The driver's connection under a pooled SQLAlchemy one."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def _pause_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "sending paused" in r.getMessage()]


def _assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_failover_to_a_read_only_node_pauses_once_and_resumes_without_a_restart(
    engine: EngineFactory,
    smtp_server: SMTPServer,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While PostgreSQL refuses writes nothing is sent or lost, one line and /healthz say why;
    once writes are back the next pass, on the same pool, sends each due email exactly once."""
    caplog.set_level(logging.INFO, logger="campaign")
    app, clock = engine(NOW)
    service = make_service(app)
    _subscribe(app, PEOPLE)
    assert service.run_pass(NOW).sent == len(PEOPLE)  # the welcome emails

    clock.set(DAY_1)
    _fail_over_to_a_read_only_node(database_url)
    for _ in range(3):
        result = service.run_pass()
        assert (result.sent, result.claimed) == (0, 0)
        assert result.error == f"the database refuses writes ({READ_ONLY})"
        clock.advance(timedelta(seconds=30))
    assert len(smtp_server.received) == len(PEOPLE)
    with app.db.transaction() as session:  # reading still works: nothing was lost
        statuses = session.scalars(select(Delivery.status).where(Delivery.step_key == "day01"))
        assert list(statuses) == []
    assert service.paused_reason == f"the database refuses writes ({READ_ONLY})"
    health = _get(app, "/healthz")
    assert health.status_code == 503
    assert health.json()["reason"] == "database-refuses-writes"
    assert READ_ONLY not in health.text  # the detail is for operators only
    assert READ_ONLY in _get_admin(app, "/healthz").json()["detail"]
    assert "campaign_sending_paused 1.0" in _get_admin(app, "/metrics").text

    # Leave a connection opened during the outage in the pool, as a long outage would.
    with app.db.engine.connect() as pooled:
        assert pooled.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
        stuck = _psycopg(pooled)
    _writes_come_back(database_url)
    # The stuck pool E5 found: that idle connection still refuses writes.
    assert stuck.info.parameter_status("default_transaction_read_only") == "on"

    result = service.run_pass()
    assert (result.sent, result.error) == (len(PEOPLE), None)
    copies = _copies(smtp_server)
    assert set(copies.values()) == {1}
    assert sorted(copies) == sorted([(p, s) for p in PEOPLE for s in ("welcome", "day01")])
    assert service.paused_reason is None
    assert _get(app, "/healthz").status_code == 200
    assert len(_pause_lines(caplog)) == 1
    assert [r.getMessage() for r in caplog.records].count("sending resumed") == 1
    _assert_no_traceback(caplog)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_per_email_connection_reports_a_read_only_node_and_no_pooled_one_is_reused(
    database_url: str,
) -> None:
    """On the driver path a read-only refusal is DatabaseRefusesWrites, and every connection
    pooled before it is replaced, so the next try writes on a new one."""
    db = Database(database_url)
    try:
        _fail_over_to_a_read_only_node(database_url)
        with db.engine.connect() as first, db.engine.connect() as second:
            stuck = [_psycopg(first), _psycopg(second)]
        _writes_come_back(database_url)
        assert [c.info.parameter_status("default_transaction_read_only") for c in stuck] == [
            "on",
            "on",
        ]
        driver = DriverConnection(db)
        statement: list[tuple[str, dict[str, Any]]] = [
            ("UPDATE subscribers SET first_name = 'x' WHERE id = 0", {})
        ]
        with pytest.raises(DatabaseRefusesWrites) as refused:
            driver.run(statement)  # on one of the two
        assert refused.value.reason == READ_ONLY
        assert "read-only transaction" in refused.value.detail
        driver.run(statement)  # not on the other one
        driver.close()
        assert [c.closed for c in stuck] == [True, True]
    finally:
        db.dispose()


def _sqlite_limit(app: App) -> Callable[[int | None], None]:
    """Set PRAGMA max_page_count (per connection) on every connection of the engine."""
    limit: list[int | None] = [None]

    @event.listens_for(app.db.engine, "connect")
    def _apply(dbapi_connection: Any, _record: Any) -> None:
        pages = limit[0] if limit[0] is not None else 1_073_741_823  # SQLite's default
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    def set_limit(pages: int | None) -> None:
        limit[0] = pages
        app.db.discard_connections()

    return set_limit


def _page_count(app: App) -> int:
    with app.db.engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_full_sqlite_disk_stops_sending_with_one_line_and_resumes_intact(
    engine: EngineFactory, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk that fills mid-pass stops claiming and sending (nothing goes out unrecorded),
    with one line; once there is room again the rest goes once each and the file is intact."""
    caplog.set_level(logging.INFO, logger="campaign")
    app, clock = engine(NOW, BATCH_SIZE="5")
    service = make_service(app)
    set_limit = _sqlite_limit(app)
    people = [f"reader{n}@example.org" for n in range(60)]
    _subscribe(app, people)
    set_limit(_page_count(app) + 1)  # room for the first few claims
    results = [service.run_pass() for _ in range(3)]
    assert {r.error for r in results} == {f"the database refuses writes ({DISK_FULL})"}
    with app.db.transaction() as session:
        recorded = set(
            session.scalars(select(Delivery.message_id).where(Delivery.status == "sent"))
        )
    received = {str(r.message["Message-ID"]) for r in smtp_server.received}
    assert received == recorded  # never sent what it could not record
    assert 0 < len(received) < len(people)
    assert len(_pause_lines(caplog)) == 1

    set_limit(None)
    clock.advance(timedelta(minutes=1))
    result = service.run_pass()
    assert result.error is None
    copies = _copies(smtp_server)
    assert sorted(copies) == sorted((p, "welcome") for p in people)
    assert set(copies.values()) == {1}
    assert [r.getMessage() for r in caplog.records].count("sending resumed") == 1
    with app.db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    _assert_no_traceback(caplog)


class _ExclusiveLock:
    """What another process (`sqlite3 campaign.db 'BEGIN EXCLUSIVE; ...'`) does to the file:
    a sqlite3 connection of its own, outside the engine's write lock, holding BEGIN EXCLUSIVE
    (from a thread) until released."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            self._held.set()
            self._release.wait(30)
            connection.execute("COMMIT")
        finally:
            connection.close()

    def __enter__(self) -> _ExclusiveLock:
        self._thread.start()
        assert self._held.wait(10)
        return self

    def release_after(self, seconds: float, then: Callable[[], None] = lambda: None) -> None:
        def later() -> None:
            # Real time on purpose: the lock is held against a real busy timeout.
            threading.Event().wait(seconds)
            then()
            self._release.set()

        threading.Thread(target=later, daemon=True).start()

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._thread.join(10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pass_waits_out_a_short_outside_lock_and_sends_nothing_before_its_claim(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A connection outside the engine holding BEGIN EXCLUSIVE for a second (under the busy
    timeout): the pass waits, sends nothing before its claim commits, then each email once."""
    app, _ = engine(NOW)
    _subscribe(app, PEOPLE)
    service = make_service(app)
    seen_while_locked: list[int] = []
    with _ExclusiveLock(tmp_path / "campaign.db") as lock:
        lock.release_after(1.0, lambda: seen_while_locked.append(len(smtp_server.received)))
        result = service.run_pass()
    assert seen_while_locked == [0]
    assert (result.sent, result.error) == (len(PEOPLE), None)
    assert set(_copies(smtp_server).values()) == {1}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_lock_held_past_the_busy_timeout_pauses_sending_then_it_resumes(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held past the busy timeout (shortened here to 0.1 s) pauses sending with one line
    and a 503 /healthz; once it is let go the next pass sends each email once."""
    caplog.set_level(logging.INFO, logger="campaign")
    app, _ = engine(NOW)
    _subscribe(app, PEOPLE)
    service = make_service(app)

    @event.listens_for(app.db.engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 100")

    app.db.discard_connections()
    with _ExclusiveLock(tmp_path / "campaign.db"):
        results = [service.run_pass() for _ in range(3)]
        health = _get(app, "/healthz")
    assert {(r.sent, r.error) for r in results} == {(0, f"the database refuses writes ({LOCKED})")}
    assert smtp_server.received == []
    assert health.status_code == 503
    assert health.json()["reason"] == "database-refuses-writes"
    assert len(_pause_lines(caplog)) == 1

    result = service.run_pass()
    assert (result.sent, result.error) == (len(PEOPLE), None)
    assert set(_copies(smtp_server).values()) == {1}
    assert [r.getMessage() for r in caplog.records].count("sending resumed") == 1
    _assert_no_traceback(caplog)


def test_each_way_sqlite_refuses_writes_is_recognised(tmp_path: Path) -> None:
    """Real sqlite3 errors for a full disk, a lock and a read-only file are write refusals;
    a constraint violation is not."""
    path = tmp_path / "t.db"
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("CREATE TABLE t (x TEXT UNIQUE)")
    writer.execute("INSERT INTO t VALUES ('a')")

    def refusal(connection: sqlite3.Connection, sql: str) -> str | None:
        with pytest.raises(sqlite3.Error) as raised:
            connection.execute(sql)
        return write_refusal(raised.value)

    assert refusal(writer, "INSERT INTO t VALUES ('a')") is None
    full = sqlite3.connect(path, isolation_level=None)
    full.execute(f"PRAGMA max_page_count = {full.execute('PRAGMA page_count').fetchone()[0]}")
    assert refusal(full, "INSERT INTO t SELECT hex(randomblob(8000))") == DISK_FULL
    full.execute("BEGIN EXCLUSIVE")
    assert refusal(writer, "INSERT INTO t VALUES ('b')") == LOCKED
    full.execute("ROLLBACK")
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    assert refusal(reader, "INSERT INTO t VALUES ('c')") == READ_ONLY_FILE
    for connection in (writer, full, reader):
        connection.close()


def test_postgresql_refusals_are_recognised_by_their_sqlstate() -> None:
    """psycopg's read-only (25006, an InternalError) and disk-full (53100, an OperationalError)
    errors are write refusals; a unique violation or a server shutting down is not."""
    errors = psycopg.errors
    assert write_refusal(errors.ReadOnlySqlTransaction("x")) == READ_ONLY
    assert write_refusal(errors.DiskFull("x")) == DISK_FULL
    assert write_refusal(errors.UniqueViolation("x")) is None
    assert write_refusal(errors.AdminShutdown("x")) is None


def test_a_write_refusal_crosses_a_process_pipe_unchanged() -> None:
    """A refusal from a sender process arrives with the same reason, detail and message."""
    sent = DatabaseRefusesWrites(DISK_FULL, "database or disk is full")
    arrived = pickle.loads(pickle.dumps(sent))  # noqa: S301 (our own object, just made)
    assert (arrived.reason, arrived.detail, arrived.message) == (
        sent.reason,
        sent.detail,
        "the database refuses writes (disk full)",
    )


def _get_admin(app: App, path: str) -> httpx.Response:
    """GET from the operators' listener (ADMIN_LISTEN): /metrics lives there."""

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_admin_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(fetch())


def _post(app: App, path: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, **kwargs)

    return asyncio.run(send())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_signup_while_the_database_refuses_writes_is_asked_to_retry(
    engine: EngineFactory, smtp_server: SMTPServer, database_url: str
) -> None:
    """Signups (JSON and the form) during a failover get 503 with Retry-After, never a 500 or
    a 200 that lost the row; once writes are back the same signup works and is stored once."""
    app, _ = engine(NOW, DOUBLE_OPT_IN="false")
    _fail_over_to_a_read_only_node(database_url)
    app.db.discard_connections()
    try:
        as_json = _post(app, "/subscribe", json={"email": "new@example.org"})
        as_form = _post(app, "/subscribe", data={"email": "new@example.org"})
    finally:
        _writes_come_back(database_url)
    for response in (as_json, as_form):
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
    assert "try again" in as_form.text
    app.db.discard_connections()
    assert _post(app, "/subscribe", json={"email": "new@example.org"}).status_code == 200
    app.signup_mail.drain(NOW)  # the engine sends the welcome, off the request path
    assert [r.recipients for r in smtp_server.received] == [["new@example.org"]]
