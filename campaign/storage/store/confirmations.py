"""Confirmation emails queued by signups: the per-address limit, claims shared by several
senders on one database, outcomes, and the rows that make a link good or inert."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from campaign.storage.models import Confirmation, Subscriber


@dataclass(frozen=True)
class ConfirmationClaim:
    """A queued confirmation this sender holds, with what its email needs."""

    id: int
    subscriber_id: int
    email: str
    status: str
    attempts: int
    #: the plan the signup named (None: the default plan, or a row from before several plans).
    plan_id: str | None = None


@dataclass(frozen=True)
class ConfirmationLink:
    """What a confirmation link names: its row and the row's subscriber."""

    id: int
    subscriber_id: int
    inert: bool  # the person unsubscribed, confirmed by another link, or left since
    #: the plan the signup named (None: the default plan).
    plan_id: str | None = None


def lock_subscriber(session: Session, subscriber_id: int) -> None:
    """Serialise signups of one address (PostgreSQL; SQLite has one writer at a time)."""
    session.execute(
        select(Subscriber.id).where(Subscriber.id == subscriber_id).with_for_update()
    ).all()


def confirmations_since(session: Session, subscriber_id: int, since: datetime) -> int:
    """How many confirmation emails were queued for a subscriber since `since`."""
    return int(
        session.scalar(
            select(func.count(Confirmation.id)).where(
                Confirmation.subscriber_id == subscriber_id, Confirmation.created_at > since
            )
        )
        or 0
    )


def queue_confirmation(
    session: Session, subscriber_id: int, now: datetime, plan_id: str | None = None
) -> int:
    row = Confirmation(
        subscriber_id=subscriber_id, created_at=now, next_try_at=now, attempts=0, plan_id=plan_id
    )
    session.add(row)
    session.flush()
    return row.id


def claim_confirmations(
    session: Session, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[ConfirmationClaim]:
    """Take up to `limit` confirmations due now that nobody holds (or whose holder's lease
    ended), for `owner`; other senders skip them (PostgreSQL: SKIP LOCKED)."""
    due = (
        select(Confirmation.id)
        .where(
            Confirmation.sent_at.is_(None),
            Confirmation.failed_at.is_(None),
            Confirmation.voided_at.is_(None),
            Confirmation.next_try_at <= now,
            or_(Confirmation.claimed_until.is_(None), Confirmation.claimed_until < now),
        )
        .order_by(Confirmation.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(due))
    if not ids:
        return []
    session.execute(
        update(Confirmation)
        .where(Confirmation.id.in_(ids))
        .values(claimed_by=owner, claimed_until=now + lease)
    )
    rows = session.execute(
        select(
            Confirmation.id,
            Confirmation.subscriber_id,
            Subscriber.email,
            Subscriber.status,
            Confirmation.attempts,
            Confirmation.plan_id,
        )
        .join(Subscriber, Subscriber.id == Confirmation.subscriber_id)
        .where(Confirmation.id.in_(ids))
        .order_by(Confirmation.id)
    )
    return [ConfirmationClaim(*row) for row in rows]


def _held(claim_id: int, owner: str) -> ColumnElement[bool]:
    # Still this sender's, and not recorded sent (a 250 is final, whoever held it).
    return (
        (Confirmation.id == claim_id)
        & (Confirmation.claimed_by == owner)
        & Confirmation.sent_at.is_(None)
    )


def confirmation_sent(session: Session, claim_id: int, now: datetime) -> None:
    """The server took it: never sent again (recorded whoever holds the claim by now)."""
    session.execute(
        update(Confirmation)
        .where(Confirmation.id == claim_id)
        .values(sent_at=now, attempts=Confirmation.attempts + 1, claimed_until=None)
    )


def confirmation_retry(
    session: Session, claim_id: int, owner: str, error: str, retry_at: datetime
) -> None:
    session.execute(
        update(Confirmation)
        .where(_held(claim_id, owner))
        .values(
            attempts=Confirmation.attempts + 1,
            last_error=error[:2000],
            next_try_at=retry_at,
            claimed_by=None,
            claimed_until=None,
        )
    )


def confirmation_failed(
    session: Session, claim_id: int, owner: str, error: str, now: datetime
) -> None:
    """Given up (refused for good, too many tries, or nobody left to confirm)."""
    session.execute(
        update(Confirmation)
        .where(_held(claim_id, owner))
        .values(failed_at=now, last_error=error[:2000], claimed_until=None)
    )


def confirmation_link(session: Session, confirmation_id: int) -> ConfirmationLink | None:
    row = session.get(Confirmation, confirmation_id)
    if row is None:
        return None
    return ConfirmationLink(row.id, row.subscriber_id, row.voided_at is not None, row.plan_id)


def use_confirmation(session: Session, confirmation_id: int, now: datetime) -> None:
    """This link confirmed the signup: every other link of the subscriber stops working."""
    row = session.get(Confirmation, confirmation_id)
    if row is None:
        return
    row.used_at = now
    session.execute(
        update(Confirmation)
        .where(
            Confirmation.subscriber_id == row.subscriber_id,
            Confirmation.id != confirmation_id,
            Confirmation.voided_at.is_(None),
        )
        .values(voided_at=now)
    )


def void_confirmations(session: Session, subscriber_id: int, now: datetime) -> None:
    """Links sent before now stop working (the person left: unsubscribed, bounced, ...)."""
    session.execute(
        update(Confirmation)
        .where(Confirmation.subscriber_id == subscriber_id, Confirmation.voided_at.is_(None))
        .values(voided_at=now)
    )


def due_confirmations(session: Session, now: datetime) -> int:
    """How many confirmations wait to be sent (a cheap poll for the sender)."""
    return int(
        session.scalar(
            select(func.count(Confirmation.id)).where(
                Confirmation.sent_at.is_(None),
                Confirmation.failed_at.is_(None),
                Confirmation.voided_at.is_(None),
                Confirmation.next_try_at <= now,
                or_(Confirmation.claimed_until.is_(None), Confirmation.claimed_until < now),
            )
        )
        or 0
    )


def purge_confirmations(session: Session, created_before: datetime) -> int:
    """Forget confirmation rows whose links have expired anyway; returns how many."""
    result = session.execute(delete(Confirmation).where(Confirmation.created_at < created_before))
    return int(getattr(result, "rowcount", 0) or 0)
