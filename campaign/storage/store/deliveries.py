"""Claiming due steps and recording what happened to each delivery (the send guarantee).

A claim is fenced: it belongs to one owner (a token unique per process and pass) until its
lease ends by the database's clock (store.leases). The owner renews it while it works and
proves it still holds it just before the message goes to SMTP; every outcome it records but a
250 is conditional on still holding it. A 250 is the server's word and is always recorded:
that also stops a new holder from sending the step again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campaign.domain.statuses import PENDING_DELIVERY, SETTLED_DELIVERY, SubscriberStatus
from campaign.storage.models import Delivery, Enrollment, utc_instant
from campaign.storage.plain_sql import in_list
from campaign.storage.store.leases import LeaseTime
from campaign.storage.store.people import stop_mailing
from campaign.storage.store.plain import PlainSQL


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
    #: who holds the claim: only it may send the step or record anything but a 250.
    owner: str = ""
    #: earlier tries whose outcome stayed unknown (no reply to the final dot).
    unknown_outcomes: int = 0


# The claim's statements, as plain SQL: through SQLAlchemy's expression layer a batch cost
# ~7 ms of Python (building, caching and binding statements, typing each row's instants).
# An enrollment whose lease is still running is held by someone else, whatever this host's
# clock says about its next_due_at.
_DUE_SQL = (
    "SELECT enrollments.id, enrollments.last_day, enrollments.next_due_at,"
    " enrollments.started_at, enrollments.last_sent_at, subscribers.id, subscribers.email,"
    " subscribers.first_name, subscribers.timezone"
    " FROM enrollments JOIN subscribers ON subscribers.id = enrollments.subscriber_id"
    " WHERE enrollments.plan_id = :plan AND enrollments.status = 'active'"
    " AND enrollments.next_due_at <= :now AND subscribers.status = 'active'"
    " AND (enrollments.lease_expires_at IS NULL OR enrollments.lease_expires_at <= {lease_now})"
    "{only} ORDER BY enrollments.next_due_at LIMIT :limit{lock}"
)
_SETTLE_REMOVED_SQL = (
    "UPDATE deliveries SET status = 'skipped', last_error = 'step removed from the plan',"
    " updated_at = :now"
    " WHERE enrollment_id IN {enrollments} AND status IN {pending} AND step_key NOT IN {keys}"
)
_COMPLETE_SQL = (
    "UPDATE enrollments SET status = 'completed', next_due_at = NULL, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = :now WHERE id IN {enrollments}"
)
# Two plain INs, not a row-value IN: SQLite scans the whole log for that. The extra pairs
# they match are ignored by the caller's lookup.
_DELIVERIES_SQL = (
    "SELECT enrollment_id, step_key, id, status, message_id, attempts, unknown_outcomes"
    " FROM deliveries WHERE enrollment_id IN {enrollments} AND step_key IN {keys}"
)
_MOVE_PAST_SQL = (
    "UPDATE enrollments SET last_day = :day, updated_at = :now"
    " WHERE id = :enrollment AND last_day < :day"
)
_INSERT_SQL = (
    "INSERT INTO deliveries (enrollment_id, step_key, status, attempts, unknown_outcomes,"
    " message_id, created_at, updated_at)"
    " VALUES (:enrollment, :key, 'queued', 0, 0, :message_id, :now, :now)"
)
_REQUEUE_SQL = "UPDATE deliveries SET status = 'queued', updated_at = :now WHERE id IN {deliveries}"
# next_due_at moves past the lease by the claimer's clock too, so that the due-query's index
# range skips the claim; the lease itself is what decides.
_LEASE_SQL = (
    "UPDATE enrollments SET next_due_at = :lease, lease_owner = :owner,"
    " lease_expires_at = {lease_until}, updated_at = :now WHERE id IN {enrollments}"
)
# The leases `owner` still holds among some enrollments, extended while it works.
_RENEW_SQL = (
    "UPDATE enrollments SET lease_expires_at = {lease_until}, next_due_at = :lease"
    " WHERE lease_owner = :owner AND id IN {enrollments}"
)
_HELD_SQL = "SELECT id FROM enrollments WHERE lease_owner = :owner AND id IN {enrollments}"


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
    lease: LeaseTime | None = None,
) -> list[Claim]:
    """Claim up to `limit` due steps for `owner`, each under a lease of `lease.seconds`.

    `steps` are the plan's (key, day) pairs in order; an enrollment's next step is the first
    one after the day it has reached. An enrollment whose lease runs (by the database's
    clock) is someone else's. On PostgreSQL rows locked by another claimer are skipped (FOR
    UPDATE SKIP LOCKED); on SQLite the transaction already holds the single write lock.
    `lease_until` (the claimer's `now` plus the lease) becomes the claimed enrollments'
    `next_due_at`, so that they drop out of the due-query's range meanwhile.
    """
    lease = lease or LeaseTime((lease_until - now).total_seconds())
    sql = PlainSQL(session)
    if not sql.is_sqlite:
        # Every look-up here goes by an index. Planned while the delivery log looked empty
        # (a fresh list, just analysed), PostgreSQL reads it whole, batch after batch.
        sql.run("SET LOCAL enable_seqscan TO off", {})
    at = _naive(now)
    params: dict[str, Any] = {"plan": plan_id, "now": at, "limit": limit, **lease.params()}
    only = ""
    if only_enrollment is not None:
        only, params["only"] = " AND enrollments.id = :only", only_enrollment
    lock = "" if sql.is_sqlite else " FOR UPDATE OF enrollments SKIP LOCKED"
    due = _DUE_SQL.format(lease_now=lease.now_sql(sql.is_sqlite), only=only, lock=lock)
    rows = sql.rows(due, params)
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
    chosen: list[dict[str, Any]] = []  # each claim's fields; a new delivery's id comes below
    fresh: list[dict[str, Any]] = []  # deliveries to insert
    for row in rows:
        enrollment_id, _, due_at, started_at, last_sent_at, sub_id, email, name, tz = row
        step = upcoming[enrollment_id]
        if step is None:
            continue
        key, day = step
        found = existing.get((enrollment_id, key))
        if found is not None and found[3] in SETTLED_DELIVERY:
            # Settled under an earlier plan (a step moved to a later day): never again. Move
            # past it; the enrollment stays due and the next claim looks further on.
            sql.run(_MOVE_PAST_SQL, {"day": day, "now": at, "enrollment": enrollment_id})
            continue
        if found is None:
            message_id, attempts, unknown, delivery_id = new_message_id(), 0, 0, None
            fresh.append(
                {"enrollment": enrollment_id, "key": key, "message_id": message_id, "now": at}
            )
        else:
            delivery_id, message_id, attempts, unknown = found[2], found[4], found[5], found[6]
        chosen.append(
            {
                "delivery_id": delivery_id,
                "message_id": message_id,
                "attempts": attempts,
                "enrollment_id": enrollment_id,
                "step_key": key,
                "step_day": day,
                "due_at": utc_instant(due_at) or now,
                "started_at": utc_instant(started_at) or now,
                "last_sent_at": utc_instant(last_sent_at),
                "subscriber_id": sub_id,
                "email": email,
                "first_name": name,
                "timezone": tz,
                "owner": owner,
                "unknown_outcomes": unknown,
            }
        )
    if fresh:
        # One executemany for the batch, then one query for the new ids (SQLite would run an
        # INSERT ... RETURNING row by row).
        sql.run_many(_INSERT_SQL, fresh)
        inserted = [(row["enrollment"], row["key"]) for row in fresh]
        ids = {(d[0], d[1]): d[2] for d in _deliveries_of(sql, inserted)}
        for fields in chosen:
            if fields["delivery_id"] is None:
                fields["delivery_id"] = ids[(fields["enrollment_id"], fields["step_key"])]
    claims = [Claim(**fields) for fields in chosen]
    reused = [c.delivery_id for c in claims if (c.enrollment_id, c.step_key) in existing]
    if reused:
        params = {"now": at}
        sql.run(_REQUEUE_SQL.format(deliveries=in_list("d", reused, params)), params)
    if claims:
        params = {"lease": _naive(lease_until), "owner": owner, "now": at, **lease.params()}
        enrollments = in_list("e", [c.enrollment_id for c in claims], params)
        until = lease.until_sql(sql.is_sqlite)
        sql.run(_LEASE_SQL.format(lease_until=until, enrollments=enrollments), params)
    return claims


def renew_leases(
    session: Session,
    enrollment_ids: Collection[int],
    owner: str,
    lease: LeaseTime,
    lease_until: datetime,
) -> set[int]:
    """Extend the leases `owner` still holds among `enrollment_ids`; the ids it still holds
    (the others were taken over after their lease ran out: `owner` must not send them)."""
    if not enrollment_ids:
        return set()
    sql = PlainSQL(session)
    params: dict[str, Any] = {"owner": owner, "lease": _naive(lease_until), **lease.params()}
    enrollments = in_list("e", enrollment_ids, params)
    until = lease.until_sql(sql.is_sqlite)
    sql.run(_RENEW_SQL.format(lease_until=until, enrollments=enrollments), params)
    return {row[0] for row in sql.rows(_HELD_SQL.format(enrollments=enrollments), params)}


# The per-email statements, as plain SQL built once: they run for every message sent, and
# SQLAlchemy's expression and ORM layers cost about 1 ms of CPU each time. The same text runs
# through a Session (`text()`) and on a driver connection (`record_and_prove`); parameter
# names are distinct across the parts, so on PostgreSQL they can share one statement.
_SETTLE_SQL = (
    "UPDATE deliveries SET status = :status, attempts = attempts + 1, last_error = :error,"
    " unknown_outcomes = unknown_outcomes + :unknown, updated_at = :now, sent_at = :sent_at"
    " WHERE id = :delivery AND {guard} RETURNING 1"
)
# A 250 is recorded whoever holds the claim now: the server has the message.
_SENT_SQL = _SETTLE_SQL.format(guard="status <> 'sent'")
# Anything else only by the claim's holder, while the step is still to be sent.
_OUTCOME_SQL = _SETTLE_SQL.format(
    guard="status IN ('queued', 'retry') AND EXISTS (SELECT 1 FROM enrollments"
    " WHERE enrollments.id = :enrollment AND enrollments.lease_owner = :owner)"
)
# Guarded by the step's day, so recording the same outcome twice moves the pointer once. The
# lease ends with the step, whoever held it: a new holder's proof then fails.
_ADVANCE_SQL = (
    "UPDATE enrollments SET last_day = :day, next_due_at = :next_due_at, updated_at = :now,"
    " last_sent_at = COALESCE(:sent_at, last_sent_at), lease_owner = NULL,"
    " lease_expires_at = NULL,"
    " status = CASE WHEN :finished = 1 THEN 'completed' ELSE status END"
    " WHERE id = :enrollment AND last_day < :day AND status = 'active'"
)
# The proof, just before DATA: the holder still holds the claim, and the step is still to
# be sent; its lease runs again from now. (next_due_at, indexed, is left to the lease keeper:
# rewriting an index entry per email costs more than the rest of the proof.)
_PROVE_SQL = (
    "UPDATE enrollments SET lease_expires_at = {lease_until}"
    " WHERE id = :proof_enrollment AND lease_owner = :proof_owner AND EXISTS (SELECT 1"
    " FROM deliveries WHERE deliveries.id = :proof_delivery AND deliveries.status = 'queued')"
    " RETURNING 1"
)
_STATUS_SQL = "SELECT status FROM subscribers WHERE id = :subscriber"
_END_LEASE_SQL = (
    "UPDATE enrollments SET lease_owner = NULL, lease_expires_at = NULL{due}"
    " WHERE id = :enrollment AND lease_owner = :owner"
)
_OUTCOME = text(_OUTCOME_SQL)
_ADVANCE = text(_ADVANCE_SQL)
_END_LEASE = text(_END_LEASE_SQL.format(due=""))
_RETRY_LATER = text(_END_LEASE_SQL.format(due=", next_due_at = :next_due_at"))


def _naive(instant: datetime | None) -> datetime | None:
    """How UTCDateTime stores an instant: naive UTC (plain SQL skips the column type)."""
    return None if instant is None else instant.astimezone(UTC).replace(tzinfo=None)


#: what a delivery log's last_error cannot hold: PostgreSQL refuses NUL in text, and a
#: reason that quotes a hostile address or name must stay one readable line.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_ERROR_CHARS = 1000


def _one_line(error: str | None) -> str | None:
    if error is None or (error.isprintable() and len(error) <= _ERROR_CHARS):
        return error
    return _UNPRINTABLE.sub(" ", error)[:_ERROR_CHARS]


def _settle_params(
    claim: Claim, status: str, now: datetime, error: str | None, *, unknown: int = 0
) -> dict[str, Any]:
    at = _naive(now)
    return {
        "status": status,
        "error": _one_line(error),
        "now": at,
        "delivery": claim.delivery_id,
        "sent_at": at if status == "sent" else None,
        "unknown": unknown,
        "enrollment": claim.enrollment_id,
        "owner": claim.owner,
    }


def _advance_params(
    claim: Claim, now: datetime, next_due_at: datetime | None, *, sent: bool
) -> dict[str, Any]:
    at = _naive(now)
    return {
        "day": claim.step_day,
        "next_due_at": _naive(next_due_at),
        "now": at,
        "sent_at": at if sent else None,
        "finished": int(next_due_at is None),
        "enrollment": claim.enrollment_id,
    }


def _settle_delivery(
    session: Session,
    claim: Claim,
    status: str,
    now: datetime,
    error: str | None,
    *,
    unknown: int = 0,
) -> bool:
    """Record an outcome for the claim's holder; False when it no longer holds the claim."""
    params = _settle_params(claim, status, now, error, unknown=unknown)
    return session.connection().execute(_OUTCOME, params).first() is not None


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
    """What `record_and_prove` needs of campaign.db.DriverConnection."""

    is_sqlite: bool

    def run_all(self, statements: list[tuple[str, dict[str, Any]]]) -> list[Any]: ...


@dataclass(frozen=True)
class Accepted:
    """A message the server accepted (250) whose record is not committed yet."""

    claim: Claim
    sent_at: datetime
    next_due_at: datetime | None


@dataclass(frozen=True)
class Proof:
    """What `record_and_prove` found: whether the 250 was new to the log, the next
    subscriber's status, and whether the next claim is still its holder's."""

    recorded: bool | None = None
    status: str | None = None
    held: bool | None = None


@dataclass(frozen=True)
class ProofRequest:
    """The claim about to be sent: prove it is held and re-read its subscriber's status."""

    claim: Claim
    lease: LeaseTime


def record_and_prove(
    driver: Driver, accepted: Accepted | None, proof: ProofRequest | None = None
) -> Proof:
    """In one transaction: record `accepted` as sent, then prove that the claim about to be
    sent is still held (renewing its lease) and read its subscriber's status."""
    parts: list[tuple[str, str, dict[str, Any]]] = []  # (name, sql, params)
    if accepted is not None:
        # A 250: the step is done and the enrollment moves on. The commonest write by far.
        claim, sent_at = accepted.claim, accepted.sent_at
        params = _settle_params(claim, "sent", sent_at, None)
        params |= _advance_params(claim, sent_at, accepted.next_due_at, sent=True)
        parts += [("settle", _SENT_SQL, params), ("advance", _ADVANCE_SQL, params)]
    if proof is not None:
        claim = proof.claim
        params = {
            "proof_enrollment": claim.enrollment_id,
            "proof_owner": claim.owner,
            "proof_delivery": claim.delivery_id,
            "subscriber": claim.subscriber_id,
            **proof.lease.params(),
        }
        prove = _prove_sql(proof.lease.until_sql(driver.is_sqlite))
        parts += [("prove", prove, params), ("status", _STATUS_SQL, params)]
    if not parts:
        return Proof()
    names = [name for name, _, _ in parts]
    if driver.is_sqlite:
        rows = driver.run_all([(sql, params) for _, sql, params in parts])
        found = dict(zip(names, rows, strict=True))
    else:
        found = _combined(driver, parts)
    return Proof(
        recorded=None if accepted is None else found["settle"] is not None,
        status=None if proof is None or found["status"] is None else found["status"][0],
        held=None if proof is None else found["prove"] is not None,
    )


def _combined(driver: Driver, parts: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """The parts as one PostgreSQL statement: one round trip for the whole proof."""
    statement, counted = _combined_sql(tuple((name, sql) for name, sql, _ in parts))
    params: dict[str, Any] = {}
    for _, _, part in parts:
        params |= part
    (row,) = driver.run_all([(statement, params)])
    found: dict[str, Any] = {name: (1,) if row[n] else None for n, name in enumerate(counted)}
    if len(row) > len(counted):
        found["status"] = None if row[-1] is None else (row[-1],)
    return found


@functools.lru_cache(maxsize=16)  # a handful of shapes, built once each (this runs per email)
def _combined_sql(parts: tuple[tuple[str, str], ...]) -> tuple[str, tuple[str, ...]]:
    """The one statement for `parts`, and the names of the parts it counts rows of."""
    writes = [(name, sql) for name, sql in parts if name != "status"]
    counted = tuple(name for name, _ in writes if name in ("settle", "prove"))  # RETURNING ones
    columns = [f"(SELECT count(*) FROM {name})" for name in counted]  # noqa: S608 (our names)
    if any(name == "status" for name, _ in parts):
        columns.append(f"({_STATUS_SQL})")
    with_clause = ", ".join(f"{name} AS ({sql})" for name, sql in writes)
    return f"WITH {with_clause} SELECT {', '.join(columns)}", counted


@functools.lru_cache(maxsize=4)
def _prove_sql(lease_until: str) -> str:
    return _PROVE_SQL.format(lease_until=lease_until)


def record_retry(
    session: Session, claim: Claim, now: datetime, error: str, retry_at: datetime
) -> bool:
    """A temporary failure: try the same step (same Message-ID) again at `retry_at`.
    False when the claim was no longer this holder's (nothing recorded)."""
    if not _settle_delivery(session, claim, "retry", now, error):
        return False
    _retry_later(session, claim, retry_at)
    return True


def record_unknown(
    session: Session,
    claim: Claim,
    now: datetime,
    error: str,
    *,
    retry_at: datetime | None,
    next_due_at: datetime | None,
) -> bool:
    """No final reply: the server may have the message. Try again once at `retry_at`; with
    no `retry_at` settle it as `unknown` and go on with the plan, as after a send."""
    status = "retry" if retry_at is not None else "unknown"
    if not _settle_delivery(session, claim, status, now, error, unknown=1):
        return False
    if retry_at is not None:
        _retry_later(session, claim, retry_at)
    else:
        _advance(session, claim, now, next_due_at, sent=True)
    return True


def _retry_later(session: Session, claim: Claim, retry_at: datetime) -> None:
    params = {
        "next_due_at": _naive(retry_at),
        "enrollment": claim.enrollment_id,
        "owner": claim.owner,
    }
    session.connection().execute(_RETRY_LATER, params)


def record_failed(
    session: Session, claim: Claim, now: datetime, error: str, next_due_at: datetime | None
) -> bool:
    """The step failed for good; the subscriber's plan goes on with the next step."""
    if not _settle_delivery(session, claim, "failed", now, error):
        return False
    _advance(session, claim, now, next_due_at, sent=False)
    return True


def record_bounce(
    session: Session, claim: Claim, now: datetime, error: str, email_hash: str
) -> bool:
    """The address does not exist: fail the step, mark the subscriber bounced, stop the plan,
    and suppress the address so no later signup or import mails it again."""
    if not _settle_delivery(session, claim, "bounced", now, error):
        return False
    stop_mailing(session, claim.subscriber_id, SubscriberStatus.BOUNCED, email_hash, now)
    return True


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
) -> bool:
    """The step is too late to be worth sending (catch_up: skip_after): skip it, move on."""
    if not _settle_delivery(session, claim, "skipped", now, reason):
        return False
    _advance(session, claim, now, next_due_at, sent=False)
    return True


def record_skipped(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """Not sent because the subscriber left between claim and send."""
    if not _settle_delivery(session, claim, "skipped", now, reason):
        return False
    _end_lease(session, claim)
    return True


def _end_lease(session: Session, claim: Claim) -> None:
    params = {"enrollment": claim.enrollment_id, "owner": claim.owner}
    session.connection().execute(_END_LEASE, params)


def release(session: Session, claims: Iterable[Claim]) -> None:
    """Give claims back unsent (graceful stop): due again at their old time, attempts
    unchanged. A claim that is no longer the holder's is left to its new holder."""
    for claim in claims:
        _retry_later(session, claim, claim.due_at)
