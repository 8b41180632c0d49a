"""API keys' queries (the JSON API's bearer tokens) and the delivery log read a page at a time
by id, as the API lists it."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from campaign.storage.models import ApiKey, Delivery, Enrollment, Subscriber


class ApiKeyRecord(NamedTuple):
    id: int
    public_id: str
    name: str
    secret_sha256: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _key(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        row.id,
        row.public_id,
        row.name,
        row.secret_sha256,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


def add_api_key(
    session: Session, *, public_id: str, name: str, secret_sha256: str, now: datetime
) -> int:
    key = ApiKey(public_id=public_id, name=name, secret_sha256=secret_sha256, created_at=now)
    session.add(key)
    session.flush()
    return key.id


def api_keys(session: Session) -> list[ApiKeyRecord]:
    """Every key, revoked ones too, oldest first."""
    return [_key(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def api_key_named(session: Session, name: str) -> ApiKeyRecord | None:
    row = session.scalars(select(ApiKey).where(ApiKey.name == name)).one_or_none()
    return _key(row) if row else None


def api_key_by_public_id(session: Session, public_id: str) -> ApiKeyRecord | None:
    row = session.scalars(select(ApiKey).where(ApiKey.public_id == public_id)).one_or_none()
    return _key(row) if row else None


def revoke_api_key(session: Session, key_id: int, now: datetime) -> None:
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def touch_api_key(session: Session, key_id: int, now: datetime, not_since: datetime) -> None:
    """Note the key was used at `now`, unless that was already noted after `not_since` (one
    write a minute, not one a request)."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < not_since),
        )
        .values(last_used_at=now)
    )


class DeliveryRow(NamedTuple):
    """One row of the delivery log, with whom it went to."""

    id: int
    email: str
    plan_id: str
    step_key: str
    status: str
    attempts: int
    message_id: str
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    variant: str | None


def deliveries_after(session: Session, after_id: int, limit: int) -> list[DeliveryRow]:
    """At most `limit` deliveries whose id is above `after_id`, by id: the primary key's own
    order, so that a walk page by page meets each row exactly once."""
    rows = session.execute(
        select(
            Delivery.id,
            Subscriber.email,
            Enrollment.plan_id,
            Delivery.step_key,
            Delivery.status,
            Delivery.attempts,
            Delivery.message_id,
            Delivery.last_error,
            Delivery.created_at,
            Delivery.updated_at,
            Delivery.sent_at,
            Delivery.variant,
        )
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(Delivery.id > after_id)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [DeliveryRow._make(row) for row in rows]
