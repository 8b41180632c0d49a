"""When each delivery's step was first due (the daily cap may have held it past its plan date):
a retry's lateness under catch_up: skip_after counts from there, as its first try's did.

Revision ID: 0018_delivery_first_due
Revises: 0017_plans
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_delivery_first_due"
down_revision = "0017_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing rows keep today's rule (a retry counts from the plan).
    op.add_column("deliveries", sa.Column("first_due_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # In place, as 0015: a batch rebuild would cascade deletes under foreign keys.
    op.drop_column("deliveries", "first_due_at")
