"""Signup links bound to what they were sent for: queued confirmation emails (each link names
its own row), ids that SQLite never reuses (AUTOINCREMENT) for the rows links name
(subscribers, deliveries), and a click counted once per delivery and link.

Revision ID: 0008
Revises: 0007
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

EMAIL_INDEX = "uq_subscribers_email_lower"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite gives a deleted row's id to the next insert unless the table says AUTOINCREMENT,
        # which only a table copy can add (Database.upgrade turns foreign keys off around it,
        # so the copy cascades to nothing). PostgreSQL sequences never go back: no change there.
        for table in ("subscribers", "deliveries"):
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
            _skip_ids_erased_before_now(table)
        # Batch mode cannot reflect the expression index, so the copy lost it: make it again.
        op.execute(f"DROP INDEX IF EXISTS {EMAIL_INDEX}")
        op.create_index(EMAIL_INDEX, "subscribers", [sa.text("lower(email)")], unique=True)
    op.create_table(
        "confirmations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_confirmations_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmations")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_confirmations_due"), "confirmations", ["sent_at", "failed_at", "next_try_at"]
    )
    op.create_index(op.f("ix_confirmations_subscriber_id"), "confirmations", ["subscriber_id"])
    _count_clicks_once()


#: SQLite cannot tell which ids above the highest remaining one were handed out and erased
#: before this upgrade (their links are still in inboxes): new ids start this far above.
ERASED_ID_MARGIN = 1_000_000


def _skip_ids_erased_before_now(table: str) -> None:
    bind = op.get_bind()
    highest = bind.execute(sa.text(f"SELECT max(id) FROM {table}")).scalar()  # noqa: S608  # fixed names
    if highest is None:
        return  # an empty table: a new installation
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
    bind.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :seq)"),
        {"t": table, "seq": highest + ERASED_ID_MARGIN},
    )


def _count_clicks_once() -> None:
    """Add the URL's hash, keep the first of each (delivery, link), and make it unique."""
    with op.batch_alter_table("clicks") as batch:
        batch.add_column(sa.Column("url_hash", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    seen: set[tuple[int, str]] = set()
    for click_id, delivery_id, url in bind.execute(
        sa.text("SELECT id, delivery_id, url FROM clicks ORDER BY id")
    ).all():
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        if (delivery_id, digest) in seen:
            bind.execute(sa.text("DELETE FROM clicks WHERE id = :id"), {"id": click_id})
        else:
            seen.add((delivery_id, digest))
            bind.execute(
                sa.text("UPDATE clicks SET url_hash = :h WHERE id = :id"),
                {"h": digest, "id": click_id},
            )
    with op.batch_alter_table("clicks") as batch:
        batch.alter_column("url_hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(
            op.f("uq_clicks_delivery_id_url_hash"), ["delivery_id", "url_hash"]
        )


def downgrade() -> None:
    with op.batch_alter_table("clicks") as batch:
        batch.drop_constraint(op.f("uq_clicks_delivery_id_url_hash"), type_="unique")
        batch.drop_column("url_hash")
    op.drop_index(op.f("ix_confirmations_subscriber_id"), table_name="confirmations")
    op.drop_index(op.f("ix_confirmations_due"), table_name="confirmations")
    op.drop_table("confirmations")
    # AUTOINCREMENT stays on SQLite: harmless to the older code, and ids stay unique.
