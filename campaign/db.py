"""The database engine: the one place that creates it, tunes SQLite, and runs migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from campaign.errors import DatabaseError

MIGRATIONS = Path(__file__).parent / "migrations"
#: pg_advisory_xact_lock key for migrations ("campaign" in ASCII, as a number).
MIGRATION_LOCK = 0x63616D706169676E


def normalise_url(url: str) -> str:
    """postgresql:// and postgres:// mean psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """An engine plus a session factory; `transaction()` is the only way to change data."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = _make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

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

    @contextmanager
    def transaction(self, *, flush_to_disk: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        `flush_to_disk=False` (PostgreSQL) returns from COMMIT once the server holds the
        change, before its WAL reaches the disk, as SQLite's WAL mode with synchronous=NORMAL
        always does: a crash of this process loses nothing; a crash of the database server
        can lose the last fraction of a second. Used for per-email delivery records only.
        """
        try:
            with self._sessions.begin() as session:
                if not flush_to_disk and not self.is_sqlite:
                    session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield session
        except OperationalError as exc:
            raise DatabaseError(f"database error: {exc.orig}") from exc

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision, once, however many run it.

        PostgreSQL: under an advisory lock, so instances started together migrate one at a
        time (the later ones find nothing to do). SQLite: BEGIN IMMEDIATE already serialises.
        """
        from alembic import command

        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            command.upgrade(_alembic_config(connection), "head")

    def schema_state(self) -> str:
        """ "current", "missing" (never migrated), "older" or "newer" than this code."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
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


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

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
    def _begin_immediate(connection: Any) -> None:
        # One writer at a time, decided when the transaction starts: two processes cannot
        # both read the same due rows and then both claim them.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
