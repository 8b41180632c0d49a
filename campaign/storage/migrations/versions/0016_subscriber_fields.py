"""Custom subscriber fields: one JSON object of a person's values (the plan's `fields:`), kept
as text so that SQLite and PostgreSQL store and compare it alike.

Revision ID: 0016_subscriber_fields
Revises: 0015_delivery_variants
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_subscriber_fields"
down_revision = "0015_delivery_variants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default fills the rows already there (and any writer that names no fields).
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("fields", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    # In place (ALTER TABLE ... DROP COLUMN, SQLite 3.35+): a batch rebuild drops and recreates
    # the table, and with foreign keys on, ON DELETE CASCADE would empty the tables under it.
    op.drop_column("subscribers", "fields")
