"""Subject tests: the variant of the step's subject each delivery carries (NULL: no test).

Revision ID: 0015_delivery_variants
Revises: 0014_webhook_outbox
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_delivery_variants"
# The coordinator re-chains the helpers' migrations when merging.
down_revision = "0014_webhook_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("variant", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # In place (ALTER TABLE ... DROP COLUMN, SQLite 3.35+): a batch rebuild drops and recreates
    # the table, and with foreign keys on, ON DELETE CASCADE would empty the tables under it.
    op.drop_column("deliveries", "variant")
