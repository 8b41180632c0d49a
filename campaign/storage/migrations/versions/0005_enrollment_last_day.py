"""Enrollments remember the plan day they have reached, not a step's position.

Steps are matched by key and day, so a plan edit (a step added, removed or moved) never
sends a step twice nor skips one that is still ahead. Existing rows: position N meant the
N-th step, and the shipped plan has day N at position N, so last_day = next_step - 1.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("last_day", sa.Integer(), nullable=False, server_default="-1"))
    op.execute("UPDATE enrollments SET last_day = next_step - 1")
    with op.batch_alter_table("enrollments") as batch:
        batch.alter_column("last_day", server_default=None)
        batch.drop_column("next_step")


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("next_step", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE enrollments SET next_step = last_day + 1")
    with op.batch_alter_table("enrollments") as batch:
        batch.alter_column("next_step", server_default=None)
        batch.drop_column("last_day")
