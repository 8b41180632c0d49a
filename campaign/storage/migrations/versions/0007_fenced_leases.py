"""Fenced leases: the lease moves from the delivery to the enrollment, measured by the
database's clock; an `unknown` delivery status and a count of unknown outcomes.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD = "status IN ('queued', 'retry', 'sent', 'failed', 'bounced', 'skipped')"
NEW = "status IN ('queued', 'retry', 'sent', 'failed', 'bounced', 'skipped', 'unknown')"
CHECK = "ck_deliveries_status"


def upgrade() -> None:
    op.add_column("enrollments", sa.Column("lease_owner", sa.String(length=100), nullable=True))
    op.add_column("enrollments", sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
    # A claim in flight during the upgrade keeps its holder: its lease ends at the next due.
    op.execute(
        "UPDATE enrollments SET lease_owner = (SELECT d.lease_owner FROM deliveries d"
        " WHERE d.enrollment_id = enrollments.id AND d.status = 'queued'"
        " AND d.lease_owner IS NOT NULL), lease_expires_at = next_due_at"
        " WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.enrollment_id = enrollments.id"
        " AND d.status = 'queued' AND d.lease_owner IS NOT NULL)"
    )
    # Batch mode: ALTER on PostgreSQL; on SQLite, which cannot alter a CHECK, a table copy.
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), NEW)
        batch.drop_column("lease_owner")
        batch.drop_column("lease_expires_at")
        batch.add_column(
            sa.Column("unknown_outcomes", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("unknown_outcomes")
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(length=100), nullable=True))
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), OLD)
    op.drop_column("enrollments", "lease_expires_at")
    op.drop_column("enrollments", "lease_owner")
