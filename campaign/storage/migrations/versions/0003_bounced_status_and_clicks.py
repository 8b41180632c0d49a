"""A `bounced` delivery status (for numbers per step) and the clicks table.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD = "status IN ('queued', 'retry', 'sent', 'failed', 'skipped')"
NEW = "status IN ('queued', 'retry', 'sent', 'failed', 'bounced', 'skipped')"


def _replace_status_check(allowed: str) -> None:
    # Batch mode: ALTER on PostgreSQL; on SQLite, which cannot alter a CHECK, a table copy.
    name = op.f("ck_deliveries_status")  # op.f: the name is final, no naming convention on top
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(name, type_="check")
        batch.create_check_constraint(name, allowed)


def upgrade() -> None:
    _replace_status_check(NEW)
    op.create_table(
        "clicks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_clicks_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    op.create_index("ix_clicks_delivery_id", "clicks", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_clicks_delivery_id", table_name="clicks")
    op.drop_table("clicks")
    _replace_status_check(OLD)
