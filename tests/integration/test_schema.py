"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

import re
import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import SAWarning

from campaign.storage.db import Database
from campaign.storage.models import Base


def test_migrations_create_exactly_what_the_models_declare(database_url: str) -> None:
    """After `db upgrade`, autogenerate finds nothing to change: no forgotten migration."""
    db = Database(database_url)
    with db.engine.connect() as connection, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes; alembic warns and skips comparing them.
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.dispose()
    assert _without_collations(differences) == []


def _without_collations(differences: list[Any]) -> list[Any]:
    """The differences, but an expression index that differs only by its COLLATE: PostgreSQL's
    reflection leaves the collation out (the console's search indexes declare "C")."""

    def shape(index: Any) -> tuple[str, tuple[str, ...]]:
        expressions = [
            re.sub(r"[()]|::text|\s*COLLATE \"C\"", "", str(e)) for e in index.expressions
        ]
        return index.name, tuple(expressions)

    removed = {shape(d[1]) for d in differences if d[0] == "remove_index"}
    added = {shape(d[1]) for d in differences if d[0] == "add_index"}
    same = removed & added
    return [
        d
        for d in differences
        if d[0] not in ("remove_index", "add_index") or shape(d[1]) not in same
    ]
