"""The clock leases are measured by: the database's own, so that every engine on it agrees.

A host's clock can be minutes off, and a process that was paused does not notice the time that
passed; so a lease's expiry is written and compared in the database's time
(`statement_timestamp()` on PostgreSQL; on SQLite, which only one machine opens, that machine's
clock, read by SQLite itself). Tests that walk simulated days inject a Clock instead, shared by
the engines they run side by side as a database's clock would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from campaign.clock import Clock

# Instants as the engine stores them on SQLite: text with microseconds (see fast_path).
_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
_SQLITE_UNTIL = "(strftime('%Y-%m-%d %H:%M:%f', 'now', :lease_offset) || '000')"
_POSTGRES_NOW = "(statement_timestamp() AT TIME ZONE 'UTC')"
_POSTGRES_UNTIL = f"({_POSTGRES_NOW} + make_interval(secs => :lease_seconds))"


@dataclass(frozen=True)
class LeaseTime:
    """`seconds` of lease, by the database's clock (or `clock`, when a test injects one).

    Statements use `now_sql` and `until_sql` as SQL expressions and bind `params()`.
    """

    seconds: float
    clock: Clock | None = None

    def now_sql(self, is_sqlite: bool) -> str:
        if self.clock is not None:
            return ":lease_now"
        return _SQLITE_NOW if is_sqlite else _POSTGRES_NOW

    def until_sql(self, is_sqlite: bool) -> str:
        if self.clock is not None:
            return ":lease_until"
        return _SQLITE_UNTIL if is_sqlite else _POSTGRES_UNTIL

    def params(self) -> dict[str, Any]:
        if self.clock is not None:
            now = self.clock.now().astimezone(UTC).replace(tzinfo=None)
            return {"lease_now": now, "lease_until": now + timedelta(seconds=self.seconds)}
        return {"lease_seconds": float(self.seconds), "lease_offset": f"+{self.seconds} seconds"}
