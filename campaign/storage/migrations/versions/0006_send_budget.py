"""A shared token bucket per sending limit (SEND_RATE_PER_SECOND, SEND_RATE_PER_HOUR).

Engines on one database take tokens from the same rows, so the limits hold in total.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_budget",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_send_budget"),
    )


def downgrade() -> None:
    op.drop_table("send_budget")
