"""Claiming due steps and recording what happened to each delivery (the send guarantee)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from campaign.models import PENDING_DELIVERY, Delivery, Enrollment, utc_instant
from campaign.plain_sql import in_list
from campaign.store.people import cancel_enrollments, set_subscriber_status, suppress
from campaign.store.plain import PlainSQL

#: A delivery in one of these states is done: its step never goes to that enrollment again.
SETTLED = ("sent", "failed", "bounced", "skipped")


@dataclass(frozen=True)
class Claim:
    """One step of one enrollment, claimed by a pass for sending (plain values, no ORM)."""

    delivery_id: int
    message_id: str
    attempts: int
    enrollment_id: int
    step_key: str
    step_day: int
    due_at: datetime
    started_at: datetime
    last_sent_at: datetime | None
    subscriber_id: int
    email: str
    first_name: str
    timezone: str


# The claim's statements, as plain SQL: through SQLAlchemy's expression layer a batch cost
# ~7 ms of Python (building, caching and binding statements, typing each row's instants).
_DUE_SQL = (
    "SELECT enrollments.id, enrollments.last_day, enrollments.next_due_at,"
    " enrollments.started_at, enrollments.last_sent_at, subscribers.id, subscribers.email,"
    " subscribers.first_name, subscribers.timezone"
    " FROM enrollments JOIN subscribers ON subscribers.id = enrollments.subscriber_id"
    " WHERE enrollments.plan_id = :plan AND enrollments.status = 'active'"
    " AND enrollments.next_due_at <= :now AND subscribers.status = 'active'{only}"
    " ORDER BY enrollments.next_due_at LIMIT :limit{lock}"
)
_SETTLE_REMOVED_SQL = (
    "UPDATE deliveries SET status = 'skipped', last_error = 'step removed from the plan',"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = :now"
    " WHERE enrollment_id IN {enrollments} AND status IN {pending} AND step_key NOT IN {keys}"
)
_COMPLETE_SQL = (
    "UPDATE enrollments SET status = 'completed', next_due_at = NULL, updated_at = :now"
    " WHERE id IN {enrollments}"
)
# Two plain INs, not a row-value IN: SQLite scans the whole log for that. The extra pairs
# they match are ignored by the caller's lookup.
_DELIVERIES_SQL = (
    "SELECT enrollment_id, step_key, id, status, message_id, attempts FROM deliveries"
    " WHERE enrollment_id IN {enrollments} AND step_key IN {keys}"
)
_MOVE_PAST_SQL = (
    "UPDATE enrollments SET last_day = :day, updated_at = :now"
    " WHERE id = :enrollment AND last_day < :day"
)
_INSERT_SQL = (
    "INSERT INTO deliveries (enrollment_id, step_key, status, attempts, message_id,"
    " lease_owner, lease_expires_at, created_at, updated_at)"
    " VALUES (:enrollment, :key, 'queued', 0, :message_id, :owner, :lease, :now, :now)"
)
_REQUEUE_SQL = (
    "UPDATE deliveries SET status = 'queued', lease_owner = :owner, lease_expires_at = :lease,"
    " updated_at = :now WHERE id IN {deliveries}"
)
_LEASE_SQL = (
    "UPDATE enrollments SET next_due_at = :lease, updated_at = :now WHERE id IN {enrollments}"
)


def _deliveries_of(sql: PlainSQL, pairs: list[tuple[int, str]]) -> list[tuple[Any, ...]]:
    """The delivery rows of these (enrollment, step key) pairs, and maybe a few others."""
    params: dict[str, Any] = {}
    found = _DELIVERIES_SQL.format(
        enrollments=in_list("e", {enrollment for enrollment, _ in pairs}, params),
        keys=in_list("k", {key for _, key in pairs}, params),
    )
    return sql.rows(found, params)


def claim_due(
    session: Session,
    *,
    plan_id: str,
    steps: Sequence[tuple[str, int]],
    now: datetime,
    owner: str,
    lease_until: datetime,
    limit: int,
    new_message_id: Callable[[], str],
    only_enrollment: int | None = None,
) -> list[Claim]:
    """Claim up to `limit` due steps: lease them to `owner` until `lease_until`.

    `steps` are the plan's (key, day) pairs in order; an enrollment's next step is the first
    one after the day it has reached. On PostgreSQL rows locked by another claimer are
    skipped (FOR UPDATE SKIP LOCKED); on SQLite the transaction already holds the single
    write lock. A claimed enrollment's `next_due_at` becomes the lease expiry, so it is due
    again only if the claimer dies.
    """
    sql = PlainSQL(session)
    if not sql.is_sqlite:
        # Every look-up here goes by an index. Planned while the delivery log looked empty
        # (a fresh list, just analysed), PostgreSQL reads it whole, batch after batch.
        sql.run("SET LOCAL enable_seqscan TO off", {})
    at, lease = _naive(now), _naive(lease_until)
    params: dict[str, Any] = {"plan": plan_id, "now": at, "limit": limit}
    only = ""
    if only_enrollment is not None:
        only, params["only"] = " AND enrollments.id = :only", only_enrollment
    lock = "" if sql.is_sqlite else " FOR UPDATE OF enrollments SKIP LOCKED"
    rows = sql.rows(_DUE_SQL.format(only=only, lock=lock), params)
    if not rows:
        return []
    # A step removed from the plan while queued or awaiting a retry is settled, never sent.
    params = {"now": at}
    sql.run(
        _SETTLE_REMOVED_SQL.format(
            enrollments=in_list("e", [r[0] for r in rows], params),
            pending=in_list("p", PENDING_DELIVERY, params),
            keys=in_list("k", [key for key, _ in steps], params),
        ),
        params,
    )
    upcoming = {r[0]: next(((k, d) for k, d in steps if d > r[1]), None) for r in rows}
    finished = [enrollment for enrollment, step in upcoming.items() if step is None]
    if finished:
        params = {"now": at}
        sql.run(_COMPLETE_SQL.format(enrollments=in_list("e", finished, params)), params)
    wanted = [(enrollment, step[0]) for enrollment, step in upcoming.items() if step]
    existing = {(d[0], d[1]): d for d in _deliveries_of(sql, wanted)} if wanted else {}
    chosen: list[tuple[Any, ...]] = []  # each claim's fields; a new delivery's id comes below
    fresh: list[dict[str, Any]] = []  # deliveries to insert
    for row in rows:
        enrollment_id, _, due_at, started_at, last_sent_at, sub_id, email, name, tz = row
        step = upcoming[enrollment_id]
        if step is None:
            continue
        key, day = step
        found = existing.get((enrollment_id, key))
        if found is not None and found[3] in SETTLED:
            # Settled under an earlier plan (a step moved to a later day): never again. Move
            # past it; the enrollment stays due and the next claim looks further on.
            sql.run(_MOVE_PAST_SQL, {"day": day, "now": at, "enrollment": enrollment_id})
            continue
        if found is None:
            message_id, attempts, delivery_id = new_message_id(), 0, None
            fresh.append(
                {"enrollment": enrollment_id, "key": key, "message_id": message_id,
                 "owner": owner, "lease": lease, "now": at}
            )  # fmt: skip
        else:
            delivery_id, message_id, attempts = found[2], found[4], found[5]
        chosen.append(
            (
                delivery_id, message_id, attempts, enrollment_id, key, day,
                utc_instant(due_at) or now, utc_instant(started_at) or now,
                utc_instant(last_sent_at), sub_id, email, name, tz,
            )
        )  # fmt: skip
    ids: dict[tuple[int, str], int] = {}
    if fresh:
        # One executemany for the batch, then one query for the new ids (SQLite would run an
        # INSERT ... RETURNING row by row).
        sql.run_many(_INSERT_SQL, fresh)
        inserted = [(row["enrollment"], row["key"]) for row in fresh]
        ids = {(d[0], d[1]): d[2] for d in _deliveries_of(sql, inserted)}
    claims = [
        Claim(ids[(fields[3], fields[4])] if fields[0] is None else fields[0], *fields[1:])
        for fields in chosen
    ]
    reused = [c.delivery_id for c in claims if (c.enrollment_id, c.step_key) in existing]
    if reused:
        params = {"owner": owner, "lease": lease, "now": at}
        sql.run(_REQUEUE_SQL.format(deliveries=in_list("d", reused, params)), params)
    if claims:
        params = {"lease": lease, "now": at}
        enrollments = in_list("e", [c.enrollment_id for c in claims], params)
        sql.run(_LEASE_SQL.format(enrollments=enrollments), params)
    return claims


# The per-email statements, as plain SQL built once: they run for every message sent, and
# SQLAlchemy's expression and ORM layers cost about 1 ms of CPU each time. The same text runs
# through a Session (`text()`) and on a driver connection (`record_accepted`); parameter names
# are distinct across the two, so on PostgreSQL both can share one statement.
_SETTLE_SQL = (
    "UPDATE deliveries SET status = :status, attempts = attempts + 1, last_error = :error,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, sent_at = :sent_at"
    " WHERE id = :delivery"
)
# Guarded by the step's day, so recording the same outcome twice moves the pointer once.
_ADVANCE_SQL = (
    "UPDATE enrollments SET last_day = :day, next_due_at = :next_due_at, updated_at = :now,"
    " last_sent_at = COALESCE(:sent_at, last_sent_at),"
    " status = CASE WHEN :finished = 1 THEN 'completed' ELSE status END"
    " WHERE id = :enrollment AND last_day < :day AND status = 'active'"
)
_STATUS_SQL = "SELECT status FROM subscribers WHERE id = :subscriber"
_SETTLE = text(_SETTLE_SQL)
_ADVANCE = text(_ADVANCE_SQL)


def _naive(instant: datetime | None) -> datetime | None:
    """How UTCDateTime stores an instant: naive UTC (plain SQL skips the column type)."""
    return None if instant is None else instant.astimezone(UTC).replace(tzinfo=None)


def _settle_params(claim: Claim, status: str, now: datetime, error: str | None) -> dict[str, Any]:
    at = _naive(now)
    return {
        "status": status, "error": error, "now": at, "delivery": claim.delivery_id,
        "sent_at": at if status == "sent" else None,
    }  # fmt: skip


def _advance_params(
    claim: Claim, now: datetime, next_due_at: datetime | None, *, sent: bool
) -> dict[str, Any]:
    at = _naive(now)
    return {
        "day": claim.step_day, "next_due_at": _naive(next_due_at), "now": at,
        "sent_at": at if sent else None, "finished": int(next_due_at is None),
        "enrollment": claim.enrollment_id,
    }  # fmt: skip


def _settle_delivery(
    session: Session, claim: Claim, status: str, now: datetime, error: str | None
) -> None:
    session.connection().execute(_SETTLE, _settle_params(claim, status, now, error))


def _advance(
    session: Session,
    claim: Claim,
    now: datetime,
    next_due_at: datetime | None,
    *,
    sent: bool,
) -> None:
    session.connection().execute(_ADVANCE, _advance_params(claim, now, next_due_at, sent=sent))


class Driver(Protocol):
    """What `record_accepted` needs of campaign.db.DriverConnection."""

    is_sqlite: bool

    def run(self, statements: list[tuple[str, dict[str, Any]]]) -> Any: ...


@dataclass(frozen=True)
class Accepted:
    """A message the server accepted (250) whose record is not committed yet."""

    claim: Claim
    sent_at: datetime
    next_due_at: datetime | None


def record_accepted(
    driver: Driver, accepted: Accepted | None, check_subscriber: int | None = None
) -> str | None:
    """Record `accepted` as sent and read `check_subscriber`'s status, in one transaction;
    returns that status (None when not asked or not found)."""
    statements: list[tuple[str, dict[str, Any]]] = []
    params: dict[str, Any] = {"subscriber": check_subscriber}
    if accepted is not None:
        # A 250: the step is done and the enrollment moves on. The commonest write by far.
        claim, sent_at = accepted.claim, accepted.sent_at
        params |= _settle_params(claim, "sent", sent_at, None)
        params |= _advance_params(claim, sent_at, accepted.next_due_at, sent=True)
        if not driver.is_sqlite and check_subscriber is not None:
            combined = f"WITH settle AS ({_SETTLE_SQL}), advance AS ({_ADVANCE_SQL}) {_STATUS_SQL}"
            return driver.run([(combined, params)])  # type: ignore[no-any-return]
        statements += [(_SETTLE_SQL, params), (_ADVANCE_SQL, params)]
    if check_subscriber is not None:
        statements.append((_STATUS_SQL, params))
    return driver.run(statements) if statements else None


def record_retry(
    session: Session, claim: Claim, now: datetime, error: str, retry_at: datetime
) -> None:
    """A temporary failure: try the same step (same Message-ID) again at `retry_at`."""
    _settle_delivery(session, claim, "retry", now, error)
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == claim.enrollment_id, Enrollment.status == "active")
        .values(next_due_at=retry_at, updated_at=now)
    )


def record_failed(
    session: Session, claim: Claim, now: datetime, error: str, next_due_at: datetime | None
) -> None:
    """The step failed for good; the subscriber's plan goes on with the next step."""
    _settle_delivery(session, claim, "failed", now, error)
    _advance(session, claim, now, next_due_at, sent=False)


def record_bounce(
    session: Session, claim: Claim, now: datetime, error: str, email_hash: str
) -> None:
    """The address does not exist: fail the step, mark the subscriber bounced, stop the plan,
    and suppress the address so no later signup or import mails it again."""
    _settle_delivery(session, claim, "bounced", now, error)
    stop_mailing(session, claim.subscriber_id, "bounced", email_hash, now)


def stop_mailing(
    session: Session, subscriber_id: int | None, status: str, email_hash: str, now: datetime
) -> None:
    """Bounced or complained: status set, plan cancelled, address suppressed (by hash)."""
    if subscriber_id is not None:
        set_subscriber_status(session, subscriber_id, status, now)
        cancel_enrollments(session, subscriber_id, now)
    suppress(session, email_hash, status, now)


def consecutive_failures(session: Session, subscriber_id: int) -> int:
    """How many of the subscriber's latest settled deliveries in a row failed."""
    statuses = session.scalars(
        select(Delivery.status)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Delivery.status.in_(("sent", "failed")),
        )
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(50)
    )
    count = 0
    for status in statuses:
        if status != "failed":
            break
        count += 1
    return count


def record_late_skip(
    session: Session, claim: Claim, now: datetime, reason: str, next_due_at: datetime | None
) -> None:
    """The step is too late to be worth sending (catch_up: skip_after): skip it, move on."""
    _settle_delivery(session, claim, "skipped", now, reason)
    _advance(session, claim, now, next_due_at, sent=False)


def record_skipped(session: Session, claim: Claim, now: datetime, reason: str) -> None:
    """Not sent because the subscriber left between claim and send."""
    _settle_delivery(session, claim, "skipped", now, reason)


def release(session: Session, claims: Iterable[Claim], now: datetime) -> None:
    """Give claims back unsent (graceful stop): due again at their old time, attempts unchanged."""
    for claim in claims:
        session.execute(
            update(Delivery)
            .where(Delivery.id == claim.delivery_id, Delivery.status == "queued")
            .values(lease_owner=None, lease_expires_at=None, updated_at=now)
        )
        session.execute(
            update(Enrollment)
            .where(Enrollment.id == claim.enrollment_id, Enrollment.status == "active")
            .values(next_due_at=claim.due_at, updated_at=now)
        )
