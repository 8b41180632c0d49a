"""Several plans: a confirmation link remembers the plan its signup named.

Revision ID: 0017_plans
Revises: 0016_subscriber_fields
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_plans"
down_revision = "0016_subscriber_fields"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: a link queued before several plans, or for the default plan.
    with op.batch_alter_table("confirmations") as batch:
        batch.add_column(sa.Column("plan_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # In place (ALTER TABLE ... DROP COLUMN, SQLite 3.35+): a batch rebuild would cascade.
    op.drop_column("confirmations", "plan_id")
