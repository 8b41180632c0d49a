"""Resending a subscriber's welcome email at an operator's request (the console's action).

What a resend is, and what it never is. It is one new delivery of the plan's first step (the
welcome), in the subscriber's latest enrollment, under a step key of its own (`+resend1:KEY`,
never a key of the plan) and a new Message-ID, shown in their delivery log. It never moves
the enrollment: no lesson is sent again or skipped, the plan's own steps keep their one row
each (the exactly-once guarantee), and `campaign stats` does not count it as a step's send.

It is sent at most once: its row is committed before the message goes to the server and is
never claimed by a pass, so a crash mid-send leaves it unsettled (the next pass over that
enrollment marks it skipped, as any pending row whose key the plan does not have) rather than
sending it twice. A refusal or an unreachable server is recorded as `failed` with the reason;
the operator may ask again. At most MAX_RESENDS per enrollment. The audit entry is written in
the transaction that commits the row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from campaign.content.compose import Recipient
from campaign.content.snapshot import Content, Contents
from campaign.domain.addresses import email_hash
from campaign.domain.statuses import PENDING_DELIVERY, DeliveryStatus, SubscriberStatus
from campaign.domain.subscriber_fields import decode as stored_fields
from campaign.domain.transport import Transport
from campaign.errors import (
    BadInput,
    CampaignError,
    DeliveryError,
    UnknownOutcome,
    UnknownSubscriber,
    UnsendableAddress,
)
from campaign.people import operators
from campaign.people.operators import COMMAND_LINE
from campaign.storage import store
from campaign.storage.db import ROW_REFUSED, Database

log = logging.getLogger("campaign.resend")

#: Resends of the welcome allowed per enrollment: a button pressed in anger stops here.
MAX_RESENDS = 3


@dataclass(frozen=True)
class Resent:
    """What became of a resend: its delivery, Message-ID, status and the server's refusal."""

    delivery_id: int
    message_id: str
    status: DeliveryStatus
    error: str | None = None


def resend_welcome(
    db: Database,
    contents: Contents,
    transport: Transport,
    subscriber_id: int,
    now: datetime,
    *,
    actor: str = COMMAND_LINE,
) -> Resent:
    """Send the welcome again to an active subscriber whose welcome was already settled: the
    welcome of the plan they joined last (a plan `then:` chained them into has none).

    BadInput (nothing sent) when nobody has that id, they are not active or suppressed, the
    welcome has not gone yet (the next pass sends it), or MAX_RESENDS were sent already.
    """
    detail = f"#{subscriber_id}"
    with operators.audited(db, actor, "subscriber.resend_welcome", detail, now) as session:
        known = store.subscriber_by_id(session, subscriber_id)
        if known is None:
            raise UnknownSubscriber(f"#{subscriber_id}")
        if known.status != SubscriberStatus.ACTIVE:
            raise BadInput(f"{known.email} is {known.status}: only an active subscriber is mailed")
        if store.is_suppressed(session, email_hash(known.email)):
            raise BadInput(f"{known.email} is suppressed: it is never mailed")
        content = _welcomed_content(session, contents, subscriber_id)
        plan, composer = content.plan, content.composer
        welcome = plan.steps[0]
        state = store.welcome_state(session, subscriber_id, plan.id, welcome.key)
        if state is None or state.welcome_status in (None, *PENDING_DELIVERY):
            raise BadInput(
                f"{known.email}: the welcome has not been sent yet; the next pass sends it"
            )
        if state.resends >= MAX_RESENDS:
            raise BadInput(f"{known.email}: the welcome was resent {MAX_RESENDS} times already")
        message_id = composer.new_message_id()
        key = store.resend_key(state.resends + 1, welcome.key)
        try:
            with session.begin_nested():
                delivery_id = store.add_resend(session, state.enrollment_id, key, message_id, now)
        except ROW_REFUSED as exc:
            raise BadInput(f"{known.email}: another resend of the welcome is under way") from exc
    # The row is committed: from here on, at most one send, and the outcome is recorded.
    recipient = Recipient(known.id, known.email, known.first_name, stored_fields(known.fields))
    status, error = DeliveryStatus.SENT, None
    try:
        composed = composer.compose(
            welcome, recipient, message_id=message_id, now=now, delivery_id=delivery_id
        )
        with transport.open() as connection:
            connection.send(composed.envelope, composed.data)
    except UnknownOutcome as exc:
        status, error = DeliveryStatus.UNKNOWN, exc.message
    except (DeliveryError, UnsendableAddress) as exc:
        status, error = DeliveryStatus.FAILED, f"resend not sent: {exc.message}"
    except (CampaignError, ValueError) as exc:  # a template, a name no header can carry
        status, error = DeliveryStatus.FAILED, f"resend not sent: {exc}"
    with db.transaction() as session:
        store.settle_resend(session, delivery_id, status, error, now)
    log.info("welcome resent to subscriber %s: %s", subscriber_id, status)
    return Resent(delivery_id, message_id, status, error)


def _welcomed_content(session: Session, contents: Contents, subscriber_id: int) -> Content:
    """The running plan of the subscriber's latest enrollment that had a welcome (the default
    plan when none had: its check then says the welcome has not gone yet)."""
    for plan_id in store.plans_joined(session, subscriber_id):
        content = contents.of(plan_id)
        if content is None:
            continue
        state = store.welcome_state(session, subscriber_id, plan_id, content.plan.steps[0].key)
        if state is not None and state.welcome_status is not None:
            return content
    return contents.default
