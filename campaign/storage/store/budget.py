"""Shared token buckets: sending limits that hold in total across every engine on a database."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaign.storage.models import SendBudget


@dataclass(frozen=True)
class Bucket:
    """`rate` tokens a second, holding at most `capacity` (the largest burst allowed)."""

    name: str
    rate: float
    capacity: float


def refill(tokens: float, since: datetime, now: datetime, bucket: Bucket) -> float:
    elapsed = max(0.0, (now - since).total_seconds())
    return min(bucket.capacity, tokens + elapsed * bucket.rate)


def take_tokens(session: Session, buckets: Sequence[Bucket], want: int, now: datetime) -> int:
    """Take up to `want` whole tokens from every bucket at once; how many were granted (0..want).

    The rows are locked for the transaction (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
    SQLite), so two engines never spend the same token.
    """
    insert = (
        pg_insert if session.bind and session.bind.dialect.name == "postgresql" else sqlite_insert
    )
    rows: list[tuple[SendBudget, float]] = []
    for bucket in buckets:
        session.execute(
            insert(SendBudget)
            .values(name=bucket.name, tokens=bucket.capacity, updated_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = session.scalars(
            select(SendBudget).where(SendBudget.name == bucket.name).with_for_update()
        ).one()
        rows.append((row, refill(row.tokens, row.updated_at, now, bucket)))
    granted = min([want, *(math.floor(available) for _, available in rows)])
    granted = max(granted, 0)
    for row, available in rows:
        row.tokens = available - granted
        row.updated_at = max(now, row.updated_at)
    return granted


def wait_for_token(session: Session, buckets: Sequence[Bucket], now: datetime) -> float:
    """Seconds until every bucket holds a whole token again (0 when one is there now)."""
    wait = 0.0
    for bucket in buckets:
        row = session.get(SendBudget, bucket.name)
        if row is None:
            continue
        deficit = 1.0 - refill(row.tokens, row.updated_at, now, bucket)
        if deficit > 0:
            wait = max(wait, deficit / bucket.rate)
    return wait
