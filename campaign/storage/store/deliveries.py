"""Recording what happened to each delivery, and the proof before each send (the guarantee).

Every outcome a claim's holder records but a 250 is conditional on still holding the claim. A
250 is the server's word and is always recorded: that also stops a new holder from sending
the step again. The 250 and the proof before the next message run on the fast path's own
connection, through a `DeliveryRecorder`; the rarer outcomes are functions on a Session.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaign.domain import webhooks as spec
from campaign.domain.statuses import SubscriberStatus
from campaign.storage.db import Database
from campaign.storage.fast_path import DriverConnection, PlainSQL, in_list, naive_utc
from campaign.storage.models import Delivery, Enrollment
from campaign.storage.store import webhooks
from campaign.storage.store.claims import Claim
from campaign.storage.store.leases import LeaseTime
from campaign.storage.store.memberships import CHAIN_SQL, Chain
from campaign.storage.store.people import stop_mailing

# The per-email statements, on the fast path (campaign.storage.fast_path): the same text runs
# on a Session's connection (`PlainSQL`) and on the recorder's own (`DeliveryRecorder`);
# parameter names are distinct across the parts, so on PostgreSQL they can share one statement.
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
_END_LEASE = _END_LEASE_SQL.format(due="")
_RETRY_LATER = _END_LEASE_SQL.format(due=", next_due_at = :next_due_at")


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
    at = naive_utc(now)
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
    at = naive_utc(now)
    return {
        "day": claim.step_day,
        "next_due_at": naive_utc(next_due_at),
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
    return bool(PlainSQL(session).rows(_OUTCOME_SQL, params))


def _advance(
    session: Session,
    claim: Claim,
    now: datetime,
    next_due_at: datetime | None,
    *,
    sent: bool,
    chain: Chain | None = None,
) -> None:
    params = _advance_params(claim, now, next_due_at, sent=sent)
    sql = PlainSQL(session)
    if chain is not None and next_due_at is None:
        sql.run(CHAIN_SQL, params | chain.params())  # before the advance, as in record_and_prove
    sql.run(_ADVANCE_SQL, params)


@dataclass(frozen=True)
class Accepted:
    """A message the server accepted (250) whose record is not committed yet."""

    claim: Claim
    sent_at: datetime
    next_due_at: datetime | None
    #: the plan the enrollment's `then:` names, if this was its last step.
    chain: Chain | None = None


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


class DeliveryRecorder:
    """Records each accepted message and proves each next claim, one short transaction each,
    on a database connection of its own (the fast path). One per SMTP connection; closed
    (or left as a context manager) when that connection is done."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver = DriverConnection(db)
        #: the endpoints taking delivery.sent: asked once, at the first 250 (None: not yet).
        #: One added later gets the events of the next connection's 250s.
        self._sent_endpoints: tuple[int, ...] | None = None

    def __enter__(self) -> DeliveryRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back to the pool."""
        self._driver.close()

    def record_sent(self, accepted: Accepted) -> bool:
        """Record `accepted` as sent; False when the log had it as sent already (another
        engine sent it too)."""
        return bool(self.record_and_prove(accepted).recorded)

    def record_and_prove(
        self, accepted: Accepted | None, proof: ProofRequest | None = None
    ) -> Proof:
        """In one transaction: record `accepted` as sent, then prove that the claim about to
        be sent is still held (renewing its lease) and read its subscriber's status."""
        driver = self._driver
        parts: list[tuple[str, str, dict[str, Any]]] = []  # (name, sql, params)
        if accepted is not None:
            # A 250: the step is done and the enrollment moves on. The commonest write by far.
            claim, sent_at = accepted.claim, accepted.sent_at
            params = _settle_params(claim, "sent", sent_at, None)
            params |= _advance_params(claim, sent_at, accepted.next_due_at, sent=True)
            parts.append(("settle", _SENT_SQL, params))
            if accepted.chain is not None and accepted.next_due_at is None:
                # Before the advance: both read the enrollment as it was (as the CTEs of
                # PostgreSQL's one statement do), so the graduate is chained exactly once.
                params |= accepted.chain.params()
                parts.append(("chain", CHAIN_SQL, params))
            parts.append(("advance", _ADVANCE_SQL, params))
            if self._wants_sent_events():
                parts += self._sent_event_parts(accepted, params)
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

    def _wants_sent_events(self) -> bool:
        if self._sent_endpoints is None:
            with self._db.read() as session:
                self._sent_endpoints = webhooks.endpoints_taking(session, spec.DELIVERY_SENT)
        return bool(self._sent_endpoints)

    def _sent_event_parts(
        self, accepted: Accepted, params: dict[str, Any]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """The delivery.sent event, in the 250's transaction, written once per delivery."""
        claim = accepted.claim
        data = webhooks.delivery_data(
            claim.subscriber_id,
            claim.email,
            claim.delivery_id,
            claim.step_key,
            claim.message_id,
            "sent",
        )
        params["wh_message_id"] = spec.new_message_id()
        params["wh_subscriber"] = claim.subscriber_id
        params["wh_payload"] = spec.payload(spec.DELIVERY_SENT, accepted.sent_at, data)
        endpoints = in_list("wh_endpoint", self._sent_endpoints or (), params)
        if self._driver.is_sqlite:
            return [
                ("wh_event", webhooks.SENT_EVENT_SQLITE, params),
                ("wh_fanout", webhooks.SENT_FANOUT_SQLITE.format(endpoints=endpoints), params),
            ]
        fanout = webhooks.SENT_FANOUT_POSTGRES.format(endpoints=endpoints)
        return [("wh_event", webhooks.SENT_EVENT_POSTGRES, params), ("wh_fanout", fanout, params)]


def _combined(
    driver: DriverConnection, parts: list[tuple[str, str, dict[str, Any]]]
) -> dict[str, Any]:
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
    chain: Chain | None = None,
) -> bool:
    """No final reply: the server may have the message. Try again once at `retry_at`; with
    no `retry_at` settle it as `unknown` and go on with the plan, as after a send."""
    status = "retry" if retry_at is not None else "unknown"
    if not _settle_delivery(session, claim, status, now, error, unknown=1):
        return False
    if retry_at is not None:
        _retry_later(session, claim, retry_at)
    else:
        _advance(session, claim, now, next_due_at, sent=True, chain=chain)
    return True


def _retry_later(session: Session, claim: Claim, retry_at: datetime) -> None:
    params = {
        "next_due_at": naive_utc(retry_at),
        "enrollment": claim.enrollment_id,
        "owner": claim.owner,
    }
    PlainSQL(session).run(_RETRY_LATER, params)


def record_failed(
    session: Session,
    claim: Claim,
    now: datetime,
    error: str,
    next_due_at: datetime | None,
    chain: Chain | None = None,
) -> bool:
    """The step failed for good; the subscriber's plan goes on with the next step."""
    if not _settle_delivery(session, claim, "failed", now, error):
        return False
    _advance(session, claim, now, next_due_at, sent=False, chain=chain)
    _failed_event(session, claim, now, error)
    return True


def _failed_event(session: Session, claim: Claim, now: datetime, error: str) -> None:
    extra = {"error": _one_line(error)}
    webhooks.add_delivery_event(session, spec.DELIVERY_FAILED, claim.delivery_id, now, extra)


def record_bounce(
    session: Session, claim: Claim, now: datetime, error: str, email_hash: str
) -> bool:
    """The address does not exist: fail the step, mark the subscriber bounced, stop the plan,
    and suppress the address so no later signup or import mails it again."""
    if not _settle_delivery(session, claim, "bounced", now, error):
        return False
    _failed_event(session, claim, now, error)
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
    session: Session,
    claim: Claim,
    now: datetime,
    reason: str,
    next_due_at: datetime | None,
    chain: Chain | None = None,
) -> bool:
    """The step is too late to be worth sending (catch_up: skip_after): skip it, move on."""
    if not _settle_delivery(session, claim, "skipped", now, reason):
        return False
    _advance(session, claim, now, next_due_at, sent=False, chain=chain)
    return True


def record_skipped(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """Not sent because the subscriber left between claim and send."""
    if not _settle_delivery(session, claim, "skipped", now, reason):
        return False
    _end_lease(session, claim)
    return True


def _end_lease(session: Session, claim: Claim) -> None:
    params = {"enrollment": claim.enrollment_id, "owner": claim.owner}
    PlainSQL(session).run(_END_LEASE, params)


def release(session: Session, claims: Iterable[Claim]) -> None:
    """Give claims back unsent (graceful stop): due again at their old time, attempts
    unchanged. A claim that is no longer the holder's is left to its new holder."""
    for claim in claims:
        _retry_later(session, claim, claim.due_at)
