"""The console's subscriber search: expression indexes on lower(email) and (lower(first_name),
id) under the "C" collation (PostgreSQL only), which serve a LIKE 'prefix%' and the ordering
whatever the database's collation. SQLite needs none to be usable, and gets none.

Revision ID: 0013_console_search
Revises: 0012_api_keys
"""

from alembic import op

revision = "0013_console_search"
down_revision = "0012_api_keys"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_subscribers_email_search": '(lower(email) COLLATE "C")',
    "ix_subscribers_name_search": '(lower(first_name) COLLATE "C"), id',
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, expression in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON subscribers ({expression})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
