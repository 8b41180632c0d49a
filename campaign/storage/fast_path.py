"""The fast per-email SQL path: plain `:name` SQL run below SQLAlchemy's expression layer.

When to use it: only for the statements a sending pass runs once per claimed step or per
email (the claim batch, the proof before DATA, the recorded outcome), where SQLAlchemy's own
Python cost rivals the database's (docs/performance.md, "When to use the fast SQL path").
Everything else is a `store` function on a Session, written with the ORM or Core.

Plain SQL runs here in two ways: `PlainSQL`, on a Session's connection and inside its caller's
transaction; and `DriverConnection`, a pooled connection of its own whose writes skip
PostgreSQL's disk flush, for the 250 and the proof before the next message. Use cases never
hold either: they get a `store.DeliveryRecorder`, or call `store` functions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from campaign.errors import DatabaseError, DatabaseRefusesWrites
from campaign.storage.db import Database, write_refusal
from campaign.storage.locks import QueuedWrite


def driver_sql(sql: str, is_sqlite: bool) -> str:
    """`sql` with `:name` parameters in the driver's own style."""
    return sql if is_sqlite else _pyformat(sql)


def driver_params(params: dict[str, Any], is_sqlite: bool) -> dict[str, Any]:
    """`params` with instants (naive UTC) as the driver stores them."""
    if not is_sqlite:
        return params
    # As SQLAlchemy stores a DateTime in SQLite (always with microseconds, so that text
    # comparison orders instants).
    return {
        name: sqlite_instant(value) if isinstance(value, datetime) else value
        for name, value in params.items()
    }


def sqlite_instant(value: datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS.ffffff`, the wall-clock fields as given (callers pass UTC)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def naive_utc(instant: datetime | None) -> datetime | None:
    """How UTCDateTime stores an instant: naive UTC (plain SQL skips the column type)."""
    return None if instant is None else instant.astimezone(UTC).replace(tzinfo=None)


def in_list(name: str, values: Iterable[Any], params: dict[str, Any]) -> str:
    """`(:name0, :name1, ...)` for an IN list, its values put in `params`. For a list as
    long as a claim batch, `PlainSQL.any_of`."""
    names = []
    for n, value in enumerate(values):
        names.append(f":{name}{n}")
        params[f"{name}{n}"] = value
    return f"({', '.join(names)})"


@functools.lru_cache(maxsize=4096)  # an IN list makes one text per length, up to a batch
def _pyformat(sql: str) -> str:
    """`:name` parameters (sqlite3's style) as `%(name)s` (psycopg's)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))


class PlainSQL:
    """`:name` SQL with instants as naive UTC, run on a Session's connection, in its
    transaction. The statements still pass through the Connection, so its events (and
    anything listening, such as bench/scale.py) see them."""

    def __init__(self, session: Session) -> None:
        self._connection = session.connection()
        self.is_sqlite = self._connection.dialect.name == "sqlite"

    def any_of(
        self,
        column: str,
        name: str,
        values: Iterable[Any],
        params: dict[str, Any],
        *,
        negated: bool = False,
    ) -> str:
        """Whether `column` is (`negated`: is not) one of `values`, put in `params`.

        PostgreSQL gets one array parameter, `column = ANY(:name)`: the statement's text is
        then the same for any number of values. With an IN list, each batch's length made a
        new text of up to 200 parameters, which psycopg parses anew (it caches no text with
        over 50) and PostgreSQL plans anew: a twentieth of a sending process's CPU at 32
        connections (docs/performance.md §17)."""
        if self.is_sqlite:
            return f"{column} {'NOT IN' if negated else 'IN'} {in_list(name, values, params)}"
        params[name] = list(values)
        return f"{column} <> ALL(:{name})" if negated else f"{column} = ANY(:{name})"

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row `sql` returns, as plain tuples (instants as the driver gives them)."""
        return [tuple(row) for row in self._execute(sql, params).all()]

    def run(self, sql: str, params: dict[str, Any]) -> None:
        self._execute(sql, params)

    def run_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        """One statement for many parameter sets (the driver's executemany)."""
        self._connection.exec_driver_sql(
            driver_sql(sql, self.is_sqlite), [driver_params(row, self.is_sqlite) for row in rows]
        )

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        return self._connection.exec_driver_sql(
            driver_sql(sql, self.is_sqlite), driver_params(params, self.is_sqlite)
        )


class DriverConnection:
    """One pooled database connection driven through its driver (sqlite3, psycopg) directly.

    For the statements run for every email sent: no Session, no expression layer, and on
    PostgreSQL one round trip for a single autocommitted statement. Its writes skip
    PostgreSQL's disk flush, like `Database.transaction(flush_to_disk=False)`. Taken lazily;
    a lost connection is dropped, reported as DatabaseError, and replaced on the next use (so
    callers may simply retry).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._pooled: Any = None
        #: PostgreSQL's one cursor, kept with the connection: one made, described and closed
        #: per email cost the sending thread ~60 µs of CPU (docs/performance.md §17).
        self._kept_cursor: Any = None
        self.is_sqlite = database.is_sqlite
        self._dbapi = database.engine.dialect.loaded_dbapi
        self._first = _first_sqlite_row if database.is_sqlite else _first_psycopg_row

    def _driver(self) -> Any:
        if self._pooled is None:
            pooled = self._database.engine.raw_connection()
            driver: Any = pooled.driver_connection
            if not self.is_sqlite:
                driver.autocommit = True
                driver.execute("SET synchronous_commit TO off")
                # Every statement here finds its rows by primary key. A plan made while a
                # table looked empty (the delivery log of a fresh list, just analysed) reads
                # it whole, and the prepared statement kept that plan as the table grew: one
                # whole-table read per email sent.
                driver.execute("SET enable_seqscan TO off")
                self._kept_cursor = driver.cursor()
            self._pooled = pooled
        return self._pooled.driver_connection

    def _cursor(self) -> Any:
        """The kept cursor on PostgreSQL (its rows are all read on arrival, so it holds
        nothing between statements); a new one on SQLite, whose cursor left mid-SELECT
        would keep its statement, and its read, open."""
        driver = self._driver()
        return driver.cursor() if self.is_sqlite else self._kept_cursor

    def run(self, statements: list[tuple[str, dict[str, Any]]]) -> Any:
        """Run `statements` (`:name` parameters) in one transaction; the last one's first
        column of its first row, if it returns rows."""
        last = self.run_all(statements)[-1]
        return None if last is None else last[0]

    def run_all(self, statements: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Run `statements` in one transaction; each one's first row (None: no row)."""
        converted: dict[int, dict[str, Any]] = {}  # statements often share one parameter dict
        for _, params in statements:
            if id(params) not in converted:
                converted[id(params)] = driver_params(params, self.is_sqlite)
        prepared = [
            (driver_sql(sql, self.is_sqlite), converted[id(params)]) for sql, params in statements
        ]
        try:
            combined = self._database.combined_writes
            if combined is not None:  # SQLite: with the other threads' writes
                rows: list[Any] = combined.run(prepared, self._run_batch)
                return rows
            cursor = self._cursor()
            first = self._first
            try:
                if len(prepared) == 1 and not self.is_sqlite:  # autocommitted: one round trip
                    return [first(cursor.execute(*prepared[0]))]
                with self._transaction(cursor):
                    return self._statements(cursor, prepared)
            finally:
                if self.is_sqlite:
                    cursor.close()
        except self._dbapi.Error as exc:
            refusal = write_refusal(exc)
            lost = isinstance(exc, self._dbapi.OperationalError | self._dbapi.InterfaceError)
            if refusal is None and not lost:
                raise
            self._drop()
            if refusal is not None:
                self._database.discard_connections()
                raise DatabaseRefusesWrites(refusal, str(exc)) from exc
            raise DatabaseError(f"database error: {exc}") from exc
        except PoolTimeout as exc:  # every pooled connection in use for pool_timeout
            raise DatabaseError(self._database.pool_exhausted()) from exc
        except OperationalError as exc:  # from the pool: no connection to be had
            self._drop()
            refusal = write_refusal(exc.orig)
            if refusal is not None:
                self._database.discard_connections()
                raise DatabaseRefusesWrites(refusal, str(exc.orig)) from exc
            raise DatabaseError(f"database error: {exc.orig}") from exc

    def _run_batch(self, batch: list[QueuedWrite], join: Callable[[], None]) -> None:
        """Each queued write's statements, all in one transaction (the caller holds the write
        lock), with the writes that `join` adds to the batch before the commit. If that fails
        for one write's sake (a constraint, a value), each is run again in a transaction of
        its own, so that an error is only its own writer's; an error of the database itself
        (busy, full, read-only) is everyone's."""
        cursor = self._cursor()
        try:
            try:
                rows: list[list[tuple[Any, ...] | None]] = []
                with self._transaction(cursor):
                    while len(rows) < len(batch):
                        rows += [self._statements(cursor, q.work) for q in batch[len(rows) :]]
                        join()
            except Exception as exc:
                if len(batch) == 1 or _the_databases(exc):
                    for queued in batch:
                        queued.fail(exc)
                    return
                for queued in batch:
                    try:
                        with self._transaction(cursor):
                            queued.succeed(self._statements(cursor, queued.work))
                    except Exception as alone:
                        queued.fail(alone)
                return
            for queued, its_rows in zip(batch, rows, strict=True):
                queued.succeed(its_rows)
        finally:
            cursor.close()

    def _statements(
        self, cursor: Any, statements: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[Any, ...] | None]:
        return [self._first(cursor.execute(sql, params)) for sql, params in statements]

    @contextmanager
    def _transaction(self, cursor: Any) -> Iterator[None]:
        if self.is_sqlite:
            with self._database.writing():
                cursor.execute("BEGIN IMMEDIATE")  # as every transaction (storage.db)
                try:
                    yield
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
        else:
            with cursor.connection.transaction():
                yield

    def _drop(self) -> None:
        pooled, self._pooled, self._kept_cursor = self._pooled, None, None
        if pooled is not None:
            pooled.invalidate()

    def close(self) -> None:
        """Back to the pool, as the pool handed it out."""
        pooled, self._pooled = self._pooled, None
        kept, self._kept_cursor = self._kept_cursor, None
        if pooled is None:
            return
        try:
            if kept is not None:
                kept.close()
            if not self.is_sqlite:
                pooled.driver_connection.execute("RESET synchronous_commit")
                pooled.driver_connection.execute("RESET enable_seqscan")
                pooled.driver_connection.autocommit = False
            pooled.close()
        except (self._dbapi.OperationalError, self._dbapi.InterfaceError):
            pooled.invalidate()


#: SQLite's result codes for a database another connection holds (SQLITE_BUSY, SQLITE_LOCKED).
_SQLITE_BUSY = (5, 6)


def _the_databases(error: BaseException) -> bool:
    """Whether `error` is the database's state (busy, full, read-only), which every write in
    a batch would meet, rather than one write's own."""
    code = getattr(error, "sqlite_errorcode", None)
    busy = isinstance(code, int) and code & 0xFF in _SQLITE_BUSY
    return busy or write_refusal(error) is not None


def _first_psycopg_row(cursor: Any) -> tuple[Any, ...] | None:
    # Its result's field count, not `description`, which builds a Column per field each time.
    result = cursor.pgresult
    if result is None or not result.nfields:
        return None
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def _first_sqlite_row(cursor: Any) -> tuple[Any, ...] | None:
    if cursor.description is None:
        return None
    row = cursor.fetchone()
    return None if row is None else tuple(row)
