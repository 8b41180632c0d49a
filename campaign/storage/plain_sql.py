"""Plain SQL as each driver takes it: `:name` parameters written once, for sqlite3 and psycopg.

The statements run per email and per claim are plain SQL (SQLAlchemy's expression layer cost
more Python than the databases spent on them); this is the little that differs by driver.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any


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


def in_list(name: str, values: Iterable[Any], params: dict[str, Any]) -> str:
    """`(:name0, :name1, ...)` for an IN list, its values put in `params`."""
    names = []
    for n, value in enumerate(values):
        names.append(f":{name}{n}")
        params[f"{name}{n}"] = value
    return f"({', '.join(names)})"


@functools.lru_cache(maxsize=4096)  # an IN list makes one text per length, up to a batch
def _pyformat(sql: str) -> str:
    """`:name` parameters (sqlite3's style) as `%(name)s` (psycopg's)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))
