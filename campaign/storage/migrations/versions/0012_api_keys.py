"""API keys: the bearer tokens of the JSON API, each kept as the SHA-256 of its secret, with
its name, when it was made, last used and revoked.

Revision ID: 0012_api_keys
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_api_keys"
# The coordinator re-chains the helpers' migrations when merging them.
down_revision = "0011_operators_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("public_id", name=op.f("uq_api_keys_public_id")),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
