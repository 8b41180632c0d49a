"""Provider events: the bounces and complaints mail providers posted as webhooks, one row per
(provider, event id), so that the same event posted twice is applied once; and the one-time
tokens of signatures that do not cover the body (Mailgun's), with the body they came with.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_events")),
        sa.UniqueConstraint(
            "provider", "event_id", name=op.f("uq_provider_events_provider_event_id")
        ),
    )
    op.create_index(
        op.f("ix_provider_events_received_at"), "provider_events", ["received_at"], unique=False
    )
    op.create_table(
        "webhook_nonces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=255), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_nonces")),
        sa.UniqueConstraint("provider", "nonce", name=op.f("uq_webhook_nonces_provider_nonce")),
    )
    op.create_index(
        op.f("ix_webhook_nonces_received_at"), "webhook_nonces", ["received_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_nonces_received_at"), table_name="webhook_nonces")
    op.drop_table("webhook_nonces")
    op.drop_index(op.f("ix_provider_events_received_at"), table_name="provider_events")
    op.drop_table("provider_events")
