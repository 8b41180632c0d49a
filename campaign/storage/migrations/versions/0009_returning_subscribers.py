"""Returning subscribers: a subscriber may have several enrollments in one plan over time
(the old ones kept as history), but at most one active one, by a partial unique index.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    # Batch mode: on SQLite, which cannot drop a constraint, a table copy.
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_constraint(op.f("uq_enrollments_subscriber_id_plan_id"), type_="unique")
    op.create_index(
        "ix_enrollments_subscriber_id_plan_id", "enrollments", ["subscriber_id", "plan_id"]
    )
    op.create_index(
        "uq_enrollments_active_subscriber_plan",
        "enrollments",
        ["subscriber_id", "plan_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    # Only the newest enrollment of each subscriber and plan can stay under the old rule.
    op.execute(
        "DELETE FROM enrollments WHERE id NOT IN (SELECT MAX(id) FROM enrollments"
        " GROUP BY subscriber_id, plan_id)"
    )
    op.drop_index("uq_enrollments_active_subscriber_plan", table_name="enrollments")
    op.drop_index("ix_enrollments_subscriber_id_plan_id", table_name="enrollments")
    with op.batch_alter_table("enrollments") as batch:
        batch.create_unique_constraint(
            op.f("uq_enrollments_subscriber_id_plan_id"), ["subscriber_id", "plan_id"]
        )
