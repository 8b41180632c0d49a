"""The database engine: the one place that creates it, tunes SQLite, and runs migrations."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from campaign.errors import BadInput, DatabaseError, DatabaseRefusesWrites
from campaign.storage.locks import CombinedWrites, WriteLock

MIGRATIONS = Path(__file__).parent / "migrations"
#: pg_advisory_xact_lock key for migrations ("campaign" in ASCII, as a number).
MIGRATION_LOCK = 0x63616D706169676E

#: Why a database refuses writes, as DatabaseRefusesWrites and /healthz say it.
READ_ONLY = "read-only, after a failover?"
IN_RECOVERY = "a standby in recovery"
DISK_FULL = "disk full"
LOCKED = "locked by another process"
READ_ONLY_FILE = "read-only file"

#: PostgreSQL: read_only_sql_transaction (a standby, or default_transaction_read_only) and
#: disk_full. psycopg raises the first as an InternalError, the second as an OperationalError.
_SQLSTATES = {"25006": READ_ONLY, "53100": DISK_FULL}
#: SQLite primary result codes: SQLITE_BUSY (still locked after the busy timeout),
#: SQLITE_READONLY and SQLITE_FULL.
_SQLITE_CODES = {5: LOCKED, 8: READ_ONLY_FILE, 13: DISK_FULL}

#: Pooled connections a process keeps besides one per SMTP connection (see pool_size_for),
#: and how many more a burst may open.
DEFAULT_POOL = 5
POOL_OVERFLOW = 10

#: The connection execution option that marks a `Database.read` transaction.
_READ_ONLY = "campaign_read_only"


class WriteInReadTransaction(RuntimeError):
    """A bug, not a database state: code inside `Database.read()` tried to write."""


def write_refusal(error: BaseException | None) -> str | None:
    """Why the database refused a write, when the driver's `error` (or the error it arose
    while handling) says it did; None for any other error."""
    seen: BaseException | None = error
    for _ in range(3):  # SQLite may end the transaction itself: ROLLBACK then fails too
        if seen is None:
            return None
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate in _SQLSTATES:
            return _SQLSTATES[sqlstate]
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_CODES:
            return _SQLITE_CODES[code & 0xFF]
        seen = seen.__context__
    return None


#: A row the database refused for its content, not for its state: a unique index another
#: transaction won (a race), or a value it cannot store. The other rows of a batch are fine.
ROW_REFUSED = (IntegrityError, DataError)

P = ParamSpec("P")
R = TypeVar("R")


def retry_once_on_conflict(use_case: Callable[P, R]) -> Callable[P, R]:
    """Run `use_case` again, once, when another transaction inserted the same row first (two
    signups of one new address at the same moment): the second run finds that row, as it
    would have a moment later. Its whole transaction was rolled back, so nothing is doubled."""

    @functools.wraps(use_case)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return use_case(*args, **kwargs)
        except IntegrityError:
            return use_case(*args, **kwargs)

    return run


def driver_problem(exc: BaseException) -> str:
    """What the driver said, on one line: without SQLAlchemy's SQL, parameters and links."""
    said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return " ".join(said[0].split()) if said else type(exc).__name__


def normalise_url(url: str) -> str:
    """postgresql:// and postgres:// mean psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """An engine plus a session factory; `transaction()` is the only way to change data, and
    `read()` the way to look at it without queueing behind writers."""

    def __init__(
        self, url: str, *, pool_size: int = DEFAULT_POOL, pool_timeout: float = 30.0
    ) -> None:
        self.url = normalise_url(url)
        self.engine = _make_engine(self.url, pool_size, pool_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        file = self.sqlite_file
        self._write_lock = WriteLock(file) if file is not None else None
        #: SQLite's per-email records, committed together under the write lock (fast_path).
        self.combined_writes = (
            CombinedWrites(self._write_lock) if self._write_lock is not None else None
        )
        #: bumped by `discard_connections`; each connection remembers the one it was opened in
        self._generation = 0
        event.listen(self.engine, "connect", self._opened)
        event.listen(self.engine, "checkout", self._replace_if_discarded)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def sqlite_file(self) -> Path | None:
        """The database file, for SQLite on disk; None otherwise."""
        database = self.engine.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return Path(database).resolve()

    def backup_sqlite(self, target: Path) -> Path:
        """Copy the SQLite database to `target` with SQLite's online backup API: a consistent
        copy while passes keep writing. Written beside `target` first, then renamed over it,
        so `target` is never half a database. Returns the file copied."""
        source = self.sqlite_file
        if source is None:
            raise BadInput(
                "db backup copies a SQLite file; for PostgreSQL use pg_dump "
                "(see docs/operations.md)"
            )
        import sqlite3

        target = target.resolve()
        if target == source:
            raise BadInput(f"{target} is the database itself: choose another path")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        # Read-only, so a backup never takes a writer's lock from a running service.
        reader = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
        try:
            with contextlib.closing(reader), contextlib.closing(sqlite3.connect(partial)) as copy:
                reader.backup(copy, pages=1024)
            os.replace(partial, target)
        except (sqlite3.OperationalError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise BadInput(f"cannot write the backup to {target}: {exc}") from exc
        return source

    @contextmanager
    def transaction(self, *, flush_to_disk: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        `flush_to_disk=False` (PostgreSQL) returns from COMMIT once the server holds the
        change, before its WAL reaches the disk, as SQLite's WAL mode with synchronous=NORMAL
        always does: a crash of this process loses nothing; a crash of the database server
        can lose the last fraction of a second. Used for per-email delivery records only.
        """
        with self._refusals_raised(), self.writing(), self._sessions.begin() as session:
            if not flush_to_disk and not self.is_sqlite:
                session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in one read-only transaction, for numbers, health and lookups; a write
        inside it raises WriteInReadTransaction.

        SQLite: a deferred BEGIN with `query_only` on, outside the writers' queue: in WAL mode
        a reader never waits for a writer, so stats and /metrics answer while senders write.
        PostgreSQL: SET TRANSACTION READ ONLY.
        """
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{_READ_ONLY: True})
                driver: Any = connection.connection.driver_connection if self.is_sqlite else None
                if driver is not None:
                    driver.execute("PRAGMA query_only=ON")
                try:
                    with Session(connection, expire_on_commit=False) as session, session.begin():
                        if driver is None:
                            session.connection().exec_driver_sql("SET TRANSACTION READ ONLY")
                        yield session
                finally:
                    if driver is not None and not connection.invalidated:
                        driver.execute("PRAGMA query_only=OFF")  # back to the pool as it came
        except PoolTimeout as exc:
            raise DatabaseError(self.pool_exhausted()) from exc
        except DBAPIError as exc:
            if write_refusal(exc.orig) in (READ_ONLY, READ_ONLY_FILE):  # only a write says so
                raise WriteInReadTransaction(f"a write in a read transaction: {exc.orig}") from exc
            if isinstance(exc, OperationalError):
                raise DatabaseError(f"database error: {exc.orig}") from exc
            raise

    def probe_writes(self) -> None:
        """SQLite: raise DatabaseRefusesWrites when a writer could not begin now, as
        `transaction()` would, by BEGIN IMMEDIATE and ROLLBACK. Outside the writers' queue, so
        it waits for SQLite's lock only while a transaction holds it (up to the busy timeout,
        then LOCKED), not behind every writer queued for it. (PostgreSQL: it only connects.)"""
        with self._refusals_raised(), self.engine.connect() as connection:
            connection.begin().rollback()

    @contextmanager
    def _refusals_raised(self) -> Iterator[None]:
        """Driver errors as DatabaseRefusesWrites (and new connections from now on) when the
        database refused to write, DatabaseError when it failed otherwise."""
        try:
            yield
        except PoolTimeout as exc:
            raise DatabaseError(self.pool_exhausted()) from exc
        except DBAPIError as exc:
            refusal = write_refusal(exc.orig)
            if refusal is not None:
                self.discard_connections()
                raise DatabaseRefusesWrites(refusal, str(exc.orig)) from exc
            if isinstance(exc, OperationalError):
                raise DatabaseError(f"database error: {exc.orig}") from exc
            raise

    def pool_exhausted(self) -> str:
        """What to say when no pooled connection came free in time."""
        pool: Any = self.engine.pool
        size = getattr(pool, "size", lambda: "?")()
        return (
            f"no free database connection within {getattr(pool, '_timeout', '?')} s (pool of "
            f"{size} + {POOL_OVERFLOW}, all in use): claims go back for the next pass"
        )

    def discard_connections(self) -> None:
        """Open new connections from now on: each pooled one is closed at its next checkout.

        After the database refused a write: pooled connections may still lead to the node
        that refuses them (a failover), or be read-only for their whole life. Unlike
        `engine.dispose()`, this also reaches connections checked out by other threads.
        """
        self._generation += 1

    def _opened(self, _dbapi_connection: Any, record: Any) -> None:
        record.info["generation"] = self._generation

    def _replace_if_discarded(self, _dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # SQLAlchemy's documented way to have the pool replace a connection on checkout.
        if record.info.get("generation") != self._generation:
            raise DisconnectionError("discarded after the database refused writes")

    def writing(self) -> AbstractContextManager[None]:
        """Around a write transaction: on SQLite, the engine's writers queue (locks.WriteLock)."""
        return self._write_lock.held() if self._write_lock is not None else nullcontext()

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision, once, however many run it.

        PostgreSQL: under an advisory lock, so instances started together migrate one at a
        time (the later ones find nothing to do). SQLite: BEGIN IMMEDIATE already serialises.
        """
        from alembic import command

        try:
            with self.engine.connect() as connection:
                if self.is_sqlite:
                    # A migration that copies a table (batch mode) drops the old one: with
                    # foreign keys on, that DROP would cascade to every row that refers to it.
                    # The pragma only takes effect outside a transaction, hence on the driver's
                    # connection.
                    connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]  # a sqlite3 connection
                try:
                    with connection.begin():
                        if connection.dialect.name == "postgresql":
                            connection.exec_driver_sql(
                                f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"
                            )
                        command.upgrade(_alembic_config(connection), "head")
                finally:
                    if self.is_sqlite:
                        connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]  # as above
        except OperationalError as exc:  # cannot connect, or cannot write the file
            raise DatabaseError(f"cannot migrate the database: {driver_problem(exc)}") from exc

    def schema_state(self) -> str:
        """ "current", "missing" (never migrated), "older" or "newer" than this code."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            connection.execution_options(**{_READ_ONLY: True})  # a plain BEGIN on SQLite
            revision = MigrationContext.configure(connection).get_current_revision()
        scripts = ScriptDirectory.from_config(_alembic_config(None))
        if revision is None:
            return "missing"
        if revision == scripts.get_current_head():
            return "current"
        known = {script.revision for script in scripts.walk_revisions()}
        return "older" if revision in known else "newer"

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def pool_size_for(smtp_connections: int) -> int:
    """Connections one process may hold at once: one per SMTP connection (its delivery
    records), plus the pass's claims, the lease keeper, the signup sender and web requests."""
    return smtp_connections + DEFAULT_POOL


def _make_engine(url: str, pool_size: int, pool_timeout: float) -> Engine:
    parsed = make_url(url)
    # Beyond pool_size, up to POOL_OVERFLOW more for bursts (a request storm, retries); past
    # that a caller waits pool_timeout seconds, then gets DatabaseError, never a hang.
    pool = {"pool_size": pool_size, "max_overflow": POOL_OVERFLOW, "pool_timeout": pool_timeout}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pool)
    in_memory = not parsed.database or parsed.database == ":memory:"
    if parsed.database and not in_memory:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **({} if in_memory else pool))

    @event.listens_for(engine, "connect")
    def _tune(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # Database.read: takes no lock until it reads
            return
        # One writer at a time, decided when the transaction starts: two processes cannot
        # both read the same due rows and then both claim them.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
