"""Which address an email we sent went to: by delivery id or by Message-ID (bounce reports)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaign.storage.models import Delivery, Enrollment, Subscriber


def delivery_address(session: Session, delivery_id: int) -> str | None:
    """The address of delivery `delivery_id`'s subscriber; None if no such delivery is kept."""
    return session.scalars(
        select(Subscriber.email)
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Delivery, Delivery.enrollment_id == Enrollment.id)
        .where(Delivery.id == delivery_id)
    ).one_or_none()


class SentMessage(NamedTuple):
    """A delivery in the log and the address it went to."""

    delivery_id: int
    email: str


def address_by_message_id(session: Session, message_id: str) -> SentMessage | None:
    """The delivery that carried `message_id` (as `<id@domain>`) and its subscriber's address."""
    row = session.execute(
        select(Delivery.id, Subscriber.email)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(Delivery.message_id == message_id)
    ).one_or_none()
    return SentMessage(row[0], row[1]) if row else None


def subscriber_address(session: Session, subscriber_id: int) -> str | None:
    """The address of subscriber `subscriber_id` (whom a confirmation email went to)."""
    return session.scalars(
        select(Subscriber.email).where(Subscriber.id == subscriber_id)
    ).one_or_none()
