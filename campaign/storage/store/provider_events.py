"""Provider webhooks' queries: each event recorded once, the address a provider names matched to
an email we sent, and a sent delivery a provider later says soft-bounced."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaign.domain import webhooks as spec
from campaign.storage.models import (
    Confirmation,
    Delivery,
    Enrollment,
    ProviderEventRecord,
    Subscriber,
    WebhookNonce,
)
from campaign.storage.store import webhooks

#: the longest event id kept (the column's size); a longer one is cut, still unique in practice.
EVENT_ID_CHARS = 255


def record_provider_event(
    session: Session, provider: str, event_id: str, kind: str, verdict: str, now: datetime
) -> bool:
    """Note the event as seen; False when it was already (a retry, a replay, a concurrent
    post of it), in which case the caller must change nothing. On PostgreSQL a concurrent
    insert of the same event waits for the other transaction and then finds it."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "provider": provider,
        "event_id": event_id[:EVENT_ID_CHARS],
        "kind": kind,
        "verdict": verdict,
        "received_at": now,
    }
    statement = (
        insert(ProviderEventRecord)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(ProviderEventRecord.id)
    )
    return session.execute(statement).first() is not None


def claim_nonce(
    session: Session,
    provider: str,
    nonce: str,
    body_sha256: str,
    now: datetime,
    keep_after: datetime,
) -> bool:
    """Remember a signature's one-time token with its body's digest; False when the token was
    seen with another body (a captured signature reused). Tokens older than `keep_after` are
    dropped: their signatures are refused as stale anyway."""
    session.execute(
        delete(WebhookNonce).where(
            WebhookNonce.provider == provider, WebhookNonce.received_at < keep_after
        )
    )
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(WebhookNonce)
        .values(provider=provider, nonce=nonce[:255], body_sha256=body_sha256, received_at=now)
        .on_conflict_do_nothing(index_elements=["provider", "nonce"])
        .returning(WebhookNonce.id)
    )
    if session.execute(statement).first() is not None:
        return True
    seen = session.scalar(
        select(WebhookNonce.body_sha256).where(
            WebhookNonce.provider == provider, WebhookNonce.nonce == nonce[:255]
        )
    )
    return seen == body_sha256


class MailedAddress(NamedTuple):
    """An address the log holds a sent email to: as stored, and its latest sent delivery
    (None when only a confirmation email went there)."""

    email: str
    delivery_id: int | None


def mailed_address(session: Session, addresses: tuple[str, ...]) -> MailedAddress | None:
    """The first of `addresses` (spellings of one address) that we sent an email to: a step the
    mail server accepted (whatever became of it later), or a confirmation email."""
    lowered = tuple(dict.fromkeys(a.lower() for a in addresses if a))
    if not lowered:
        return None
    row = session.execute(
        select(Subscriber.email, Delivery.id)
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Delivery, Delivery.enrollment_id == Enrollment.id)
        .where(func.lower(Subscriber.email).in_(lowered), Delivery.sent_at.is_not(None))
        .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        return MailedAddress(row[0], row[1])
    email = session.scalars(
        select(Subscriber.email)
        .join(Confirmation, Confirmation.subscriber_id == Subscriber.id)
        .where(func.lower(Subscriber.email).in_(lowered), Confirmation.sent_at.is_not(None))
        .limit(1)
    ).first()
    return MailedAddress(email, None) if email is not None else None


def fail_sent_delivery(session: Session, delivery_id: int, error: str, now: datetime) -> int | None:
    """A delivery the server accepted did not arrive after all (a provider's soft bounce): mark
    it failed with the provider's `error`, and return its subscriber's id (None when the
    delivery is gone or is not a sent one). Its `updated_at` and `sent_at` are kept: its place
    in the subscriber's row of steps (`consecutive_failures`) is when it was sent."""
    changed = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == "sent")
        .values(status="failed", last_error=error[:1000])
        .returning(Delivery.enrollment_id)
    ).first()
    if changed is None:
        return None
    webhooks.add_delivery_event(
        session, spec.DELIVERY_FAILED, delivery_id, now, {"error": error[:1000]}
    )
    return session.scalars(
        select(Enrollment.subscriber_id).where(Enrollment.id == changed[0])
    ).one_or_none()
