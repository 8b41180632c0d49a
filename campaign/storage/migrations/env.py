"""Alembic environment: runs on the connection that `campaign.db.Database.upgrade` hands over."""

import warnings

from alembic import context
from sqlalchemy.exc import SAWarning

from campaign.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction(), warnings.catch_warnings():
    # SQLite batch migrations reflect tables; it cannot reflect the lower(email) index, which
    # batch mode never touches. Nothing is lost: say so once here instead of on every upgrade.
    warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
    context.run_migrations()
