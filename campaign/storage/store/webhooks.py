"""Outgoing webhooks' queries: endpoints, the outbox (an event and one message per endpoint
that takes it, written in the caller's transaction), claiming due messages, and outcomes.

An event is written only while some endpoint (enabled or disabled: a disabled one keeps its
events) takes its type, so a list with no endpoints writes nothing more than before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from campaign.domain import webhooks as spec
from campaign.domain.subscriber_fields import decode
from campaign.storage.fast_path import PlainSQL, naive_utc
from campaign.storage.models import (
    Delivery,
    Enrollment,
    Subscriber,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
    WebhookMessage,
    utc_instant,
)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_ERROR_CHARS = 1000


def _takes(event_type: str) -> Any:
    """SQL: the endpoint's filter takes `event_type`."""
    return or_(
        WebhookEndpoint.events == spec.ALL_EVENTS,
        WebhookEndpoint.events.like(f"%,{event_type},%"),
    )


def _takes_sql(event_type: str) -> str:
    # Our own constant names only (spec.EVENT_TYPES), never input.
    return f"(e.events = '*' OR e.events LIKE '%,{event_type},%')"


def wanted(session: Session, event_type: str) -> bool:
    """Whether any endpoint takes `event_type` (so whether to write such events at all)."""
    found = session.scalars(select(WebhookEndpoint.id).where(_takes(event_type)).limit(1))
    return found.first() is not None


def add_event(
    session: Session,
    event_type: str,
    now: datetime,
    data: Mapping[str, Any],
    *,
    subscriber_id: int | None,
    delivery_id: int | None = None,
) -> str | None:
    """Write an event and a message for each endpoint taking it, in the caller's transaction;
    its webhook-id, or None when no endpoint takes the type (nothing written)."""
    endpoints = list(session.scalars(select(WebhookEndpoint.id).where(_takes(event_type))))
    if not endpoints:
        return None
    message_id = spec.new_message_id()
    event_id = session.scalars(
        insert(WebhookEvent)
        .values(
            message_id=message_id,
            event_type=event_type,
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            payload=spec.payload(event_type, now, data),
            created_at=now,
        )
        .returning(WebhookEvent.id)
    ).one()
    session.execute(
        insert(WebhookMessage),
        [
            {
                "endpoint_id": endpoint,
                "event_id": event_id,
                "subscriber_id": subscriber_id,
                "state": PENDING,
                "attempts": 0,
                "next_try_at": now,
            }
            for endpoint in endpoints
        ],
    )
    return message_id


def subscriber_data(
    email: str, first_name: str, subscriber_id: int, status: str, fields: str | None
) -> dict[str, Any]:
    """A subscriber event's data; `fields` the custom values as stored (JSON: defaults are
    not stored, so a receiver sees what the person or an operator gave)."""
    return {
        "subscriber": {
            "id": subscriber_id,
            "email": email,
            "first_name": first_name,
            "status": status,
            "fields": decode(fields),
        }
    }


def delivery_data(
    subscriber_id: int, email: str, delivery_id: int, step: str, message_id: str, status: str
) -> dict[str, Any]:
    return {
        "subscriber": {"id": subscriber_id, "email": email},
        "delivery": {"id": delivery_id, "step": step, "message_id": message_id, "status": status},
    }


def add_delivery_event(
    session: Session,
    event_type: str,
    delivery_id: int,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> str | None:
    """An event about delivery `delivery_id` (its subscriber, step and Message-ID read here)."""
    if not wanted(session, event_type):
        return None
    row = session.execute(
        select(
            Subscriber.id, Subscriber.email, Delivery.step_key, Delivery.message_id, Delivery.status
        )
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Delivery, Delivery.enrollment_id == Enrollment.id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None
    data = delivery_data(row[0], row[1], delivery_id, row[2], row[3], row[4]) | dict(extra or {})
    return add_event(session, event_type, now, data, subscriber_id=row[0], delivery_id=delivery_id)


def forget_subscriber(session: Session, subscriber_id: int) -> None:
    """Delete every event about the subscriber, delivered or not, with its messages."""
    events = select(WebhookEvent.id).where(WebhookEvent.subscriber_id == subscriber_id)
    messages = select(WebhookMessage.id).where(WebhookMessage.event_id.in_(events))
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.message_id.in_(messages)))
    session.execute(delete(WebhookMessage).where(WebhookMessage.event_id.in_(events)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.subscriber_id == subscriber_id))


# -- the 250 on the fast path (store.deliveries' recorder) -------------------------------------


def endpoints_taking(session: Session, event_type: str) -> tuple[int, ...]:
    """The ids of the endpoints that take `event_type` (the recorder asks once, per SMTP
    connection, whether to write delivery.sent events and for whom)."""
    return tuple(session.scalars(select(WebhookEndpoint.id).where(_takes(event_type))))


_EVENT_COLUMNS = (
    "INSERT INTO webhook_events (message_id, event_type, subscriber_id, delivery_id, payload,"
    " created_at) SELECT :wh_message_id, 'delivery.sent', :wh_subscriber, :delivery,"
    " :wh_payload, :now"
)
_FANOUT_COLUMNS = (
    "INSERT INTO webhook_messages (endpoint_id, event_id, subscriber_id, state, attempts,"
    " next_try_at) SELECT e.id, ev.id, ev.subscriber_id, 'pending', 0, :now"
)
#: SQLite, statement by statement in the recorder's transaction: once per delivery.
SENT_EVENT_SQLITE = (
    _EVENT_COLUMNS  # noqa: S608 (constant text)
    + " WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = :delivery"
    " AND status = 'sent') AND NOT EXISTS (SELECT 1 FROM webhook_events"
    " WHERE delivery_id = :delivery AND event_type = 'delivery.sent')"
)
# The endpoints by primary key: the fast path's connection plans without sequential scans on
# PostgreSQL, and a forced one there costs more than the statement (it even gets JIT-compiled).
SENT_FANOUT_SQLITE = (
    _FANOUT_COLUMNS + " FROM webhook_events ev JOIN webhook_endpoints e"
    " ON e.id IN {endpoints} AND "
    + _takes_sql(spec.DELIVERY_SENT)
    + " WHERE ev.message_id = :wh_message_id"
)
#: PostgreSQL, parts of the recorder's one statement: written only if `settle` changed a row.
SENT_EVENT_POSTGRES = _EVENT_COLUMNS + " FROM settle RETURNING id, subscriber_id"
SENT_FANOUT_POSTGRES = (
    _FANOUT_COLUMNS + " FROM wh_event ev JOIN webhook_endpoints e"
    " ON e.id IN {endpoints} AND " + _takes_sql(spec.DELIVERY_SENT)
)


# -- endpoints ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointRow:
    """An endpoint as operators see it (never its secret) with its messages by state."""

    id: int
    url: str
    events: tuple[str, ...]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    pending: int
    delivered: int
    failed: int


def add_endpoint(session: Session, url: str, secret: str, events: str, now: datetime) -> int:
    return session.scalars(
        insert(WebhookEndpoint)
        .values(url=url, secret=secret, events=events, enabled=True, created_at=now)
        .returning(WebhookEndpoint.id)
    ).one()


def endpoints(session: Session) -> list[EndpointRow]:
    counts: dict[int, dict[str, int]] = {}
    for endpoint_id, state, count in session.execute(
        select(WebhookMessage.endpoint_id, WebhookMessage.state, func.count()).group_by(
            WebhookMessage.endpoint_id, WebhookMessage.state
        )
    ):
        counts.setdefault(endpoint_id, {})[state] = count
    rows = session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
    return [
        EndpointRow(
            row.id,
            row.url,
            spec.event_names(row.events),
            row.enabled,
            row.disabled_reason,
            row.created_at,
            counts.get(row.id, {}).get(PENDING, 0),
            counts.get(row.id, {}).get(DELIVERED, 0),
            counts.get(row.id, {}).get(FAILED, 0),
        )
        for row in rows
    ]


def set_endpoint_enabled(
    session: Session, endpoint_id: int, enabled: bool, reason: str | None
) -> bool:
    """Enable or disable an endpoint; False if there is no such endpoint."""
    changed = session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=enabled, disabled_reason=None if enabled else reason)
        .returning(WebhookEndpoint.id)
    ).first()
    return changed is not None


def remove_endpoint(session: Session, endpoint_id: int) -> bool:
    """Delete an endpoint with its messages and attempts; False if there is no such endpoint.
    Events no endpoint waits for any more go too."""
    removed = session.execute(
        delete(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .returning(WebhookEndpoint.id)
    ).first()
    if removed is None:
        return False
    # Without foreign keys enforced (a SQLite connection opened elsewhere), do the cascade here.
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id))
    session.execute(delete(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id))
    orphans = select(WebhookMessage.id).where(WebhookMessage.event_id == WebhookEvent.id)
    session.execute(delete(WebhookEvent).where(~orphans.exists()))
    return True


def requeue_failed(session: Session, endpoint_id: int, now: datetime) -> int:
    """Give an endpoint's given-up messages a fresh schedule from `now`; how many."""
    requeued = session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.endpoint_id == endpoint_id, WebhookMessage.state == FAILED)
        .values(state=PENDING, attempts=0, next_try_at=now, settled_at=None)
        .returning(WebhookMessage.id)
    )
    return len(requeued.all())


@dataclass(frozen=True)
class AttemptRow:
    """One delivery attempt, as operators see it."""

    at: datetime
    event_type: str
    webhook_id: str
    status_code: int | None
    error: str | None
    seconds: float
    state: str


def recent_attempts(session: Session, endpoint_id: int, limit: int = 50) -> list[AttemptRow]:
    rows = session.execute(
        select(
            WebhookAttempt.at,
            WebhookEvent.event_type,
            WebhookEvent.message_id,
            WebhookAttempt.status_code,
            WebhookAttempt.error,
            WebhookAttempt.seconds,
            WebhookMessage.state,
        )
        .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
        .join(WebhookEvent, WebhookEvent.id == WebhookMessage.event_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    return [AttemptRow(*row) for row in rows]


def endpoint_exists(session: Session, endpoint_id: int) -> bool:
    return session.get(WebhookEndpoint, endpoint_id) is not None


# -- delivering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageClaim:
    """A message claimed for one attempt: where it goes, what to send, how it is signed."""

    id: int
    endpoint_id: int
    url: str
    secret: str
    webhook_id: str
    payload: str
    attempts: int
    owner: str


# The head of each subscriber's queue per endpoint: an earlier message still pending (being
# retried, or held by another deliverer) holds the later ones back.
_DUE_SQL = (
    "SELECT m.id FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id"
    " WHERE m.state = 'pending' AND e.enabled = :yes AND m.next_try_at <= :now"
    " AND (m.claimed_until IS NULL OR m.claimed_until <= :now)"
    " AND NOT EXISTS (SELECT 1 FROM webhook_messages p WHERE p.endpoint_id = m.endpoint_id"
    " AND p.subscriber_id = m.subscriber_id AND p.state = 'pending' AND p.id < m.id)"
    " ORDER BY m.id LIMIT :limit{lock}"
)
_DETAILS_SQL = (
    "SELECT m.id, m.endpoint_id, e.url, e.secret, ev.message_id, ev.payload, m.attempts"
    " FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id"
    " JOIN webhook_events ev ON ev.id = m.event_id WHERE {message_is_claimed} ORDER BY m.id"
)


def any_due(session: Session, now: datetime) -> bool:
    """Whether a message may be claimed at `now` (a read: an idle deliverer takes no write
    lock, which on SQLite would queue behind the sending passes' writes)."""
    params: dict[str, Any] = {"now": naive_utc(now), "limit": 1, "yes": True}
    return bool(PlainSQL(session).rows(_DUE_SQL.format(lock=""), params))


def claim_messages(
    session: Session, owner: str, now: datetime, until: datetime, limit: int
) -> list[MessageClaim]:
    """Claim up to `limit` due messages for `owner` until `until`; concurrent deliverers on
    PostgreSQL skip each other's rows (SKIP LOCKED) and never claim the same message."""
    sql = PlainSQL(session)
    lock = "" if sql.is_sqlite else " FOR UPDATE OF m SKIP LOCKED"
    params: dict[str, Any] = {"now": naive_utc(now), "limit": limit, "yes": True}
    ids = [row[0] for row in sql.rows(_DUE_SQL.format(lock=lock), params)]
    if not ids:
        return []
    session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.id.in_(ids))
        .values(claimed_by=owner, claimed_until=until)
    )
    details: dict[str, Any] = {}
    claimed = sql.any_of("m.id", "id", ids, details)
    rows = sql.rows(_DETAILS_SQL.format(message_is_claimed=claimed), details)
    return [
        MessageClaim(
            id=row[0],
            endpoint_id=row[1],
            url=row[2],
            secret=row[3],
            webhook_id=row[4],
            payload=row[5],
            attempts=row[6],
            owner=owner,
        )
        for row in rows
    ]


def _settle(
    session: Session,
    claim: MessageClaim,
    now: datetime,
    values: dict[str, Any],
    status_code: int | None,
    error: str | None,
    seconds: float,
) -> bool:
    """Record an attempt and its outcome; False if the claim was taken over (nothing kept)."""
    changed = session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.id == claim.id,
            WebhookMessage.claimed_by == claim.owner,
            WebhookMessage.state == PENDING,
        )
        .values(
            claimed_by=None,
            claimed_until=None,
            attempts=WebhookMessage.attempts + 1,
            last_status=status_code,
            last_error=None if error is None else error[:_ERROR_CHARS],
            **values,
        )
        .returning(WebhookMessage.id)
    ).first()
    if changed is None:
        return False
    session.execute(
        insert(WebhookAttempt).values(
            endpoint_id=claim.endpoint_id,
            message_id=claim.id,
            at=now,
            status_code=status_code,
            error=None if error is None else error[:_ERROR_CHARS],
            seconds=seconds,
        )
    )
    return True


def message_delivered(
    session: Session, claim: MessageClaim, now: datetime, status_code: int, seconds: float
) -> bool:
    # next_try_at takes the delivery time: the due index then finds old deliveries to purge.
    values = {"state": DELIVERED, "settled_at": now, "next_try_at": now}
    return _settle(session, claim, now, values, status_code, None, seconds)


def message_retry(
    session: Session,
    claim: MessageClaim,
    now: datetime,
    retry_at: datetime | None,
    status_code: int | None,
    error: str,
    seconds: float,
) -> bool:
    """A failed attempt: try again at `retry_at`, or give the message up (None)."""
    if retry_at is None:
        values: dict[str, Any] = {"state": FAILED, "settled_at": now}
    else:
        values = {"next_try_at": retry_at}
    return _settle(session, claim, now, values, status_code, error, seconds)


def endpoint_gone(
    session: Session, claim: MessageClaim, now: datetime, error: str, seconds: float
) -> bool:
    """410 Gone: the endpoint is disabled; the message stays pending (sent if re-enabled)."""
    if not _settle(session, claim, now, {"next_try_at": now}, 410, error, seconds):
        return False
    set_endpoint_enabled(session, claim.endpoint_id, False, "the endpoint answered 410 Gone")
    return True


def next_due(session: Session) -> datetime | None:
    """When the earliest pending message to an enabled endpoint may be tried."""
    value = session.scalar(
        select(func.min(WebhookMessage.next_try_at))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(WebhookMessage.state == PENDING, WebhookEndpoint.enabled.is_(True))
    )
    return utc_instant(value)


def purge_delivered(session: Session, before: datetime, limit: int = 5000) -> int:
    """Delete up to `limit` messages delivered before `before` (with their attempts, and their
    events once no endpoint waits for them); how many. Failed and pending ones are kept."""
    rows = session.execute(
        select(WebhookMessage.id, WebhookMessage.event_id)
        .where(WebhookMessage.state == DELIVERED, WebhookMessage.next_try_at < before)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    events = {row[1] for row in rows}
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.message_id.in_(ids)))
    session.execute(delete(WebhookMessage).where(WebhookMessage.id.in_(ids)))
    waiting = select(WebhookMessage.id).where(WebhookMessage.event_id == WebhookEvent.id)
    session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(events), ~waiting.exists()))
    return len(ids)


def message_states(session: Session) -> dict[str, int]:
    """How many messages are pending, delivered and failed, over every endpoint."""
    rows = session.execute(
        select(WebhookMessage.state, func.count()).group_by(WebhookMessage.state)
    )
    found = {state: int(count) for state, count in rows}
    return {state: found.get(state, 0) for state in (PENDING, DELIVERED, FAILED)}
