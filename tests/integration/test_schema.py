"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

import warnings

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
    assert differences == []
