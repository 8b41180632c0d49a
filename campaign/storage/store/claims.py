"""Claiming due steps for a pass, and renewing the leases it holds (the send guarantee's start).

A claim is fenced: it belongs to one owner (a token unique per process and pass) until its
lease ends by the database's clock (store.leases). The owner renews it while it works and
proves it still holds it just before the message goes to SMTP (store.deliveries). Its
statements are plain SQL on the fast path (campaign.storage.fast_path).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from campaign.domain.statuses import PENDING_DELIVERY, SETTLED_DELIVERY
from campaign.domain.variants import choose_variant
from campaign.storage.fast_path import PlainSQL, in_list, naive_utc
from campaign.storage.models import utc_instant
from campaign.storage.store.daily_cap import Candidate, DailyCap, held_back
from campaign.storage.store.leases import LeaseTime
from campaign.storage.store.memberships import CHAIN_SQL, Chain


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
    #: the subject test's variant recorded with the delivery (None: no test).
    variant: str | None = None
    #: the subscriber's custom field values as stored (a JSON object in text).
    fields: str = "{}"
    #: the plan of the claim's enrollment: its step is rendered and timed by that plan.
    plan_id: str = ""
    #: when the step was due at its first claim (the daily cap may have moved it past its
    #: plan date); None for a delivery older than this record.
    first_due_at: datetime | None = None


# The claim's statements, as plain SQL (the fast path's rule): through SQLAlchemy's expression
# layer a batch cost more Python (building, caching and binding statements, typing each row's
# instants) than the database spent on it.
# An enrollment whose lease is still running is held by someone else, whatever this host's
# clock says about its next_due_at.
_DUE_SQL = (
    "SELECT enrollments.id, enrollments.last_day, enrollments.next_due_at,"
    " enrollments.started_at, enrollments.last_sent_at, subscribers.id, subscribers.email,"
    " subscribers.first_name, subscribers.timezone, enrollments.plan_id,"
    " subscribers.fields"
    " FROM enrollments JOIN subscribers ON subscribers.id = enrollments.subscriber_id"
    " WHERE enrollments.plan_id IN {plans} AND enrollments.status = 'active'"
    " AND enrollments.next_due_at <= :now AND subscribers.status = 'active'"
    " AND (enrollments.lease_expires_at IS NULL OR enrollments.lease_expires_at <= {lease_now})"
    "{only} ORDER BY enrollments.next_due_at LIMIT :limit{lock}"
)
_SETTLE_REMOVED_SQL = (
    "UPDATE deliveries SET status = 'skipped', last_error = 'step removed from the plan',"
    " updated_at = :now"
    " WHERE {enrollment_is_ours} AND {status_is_pending} AND {step_is_gone}"
)
#: an enrollment an edit completed has reached past any day (CHAIN_SQL's `last_day < :day`).
_PAST_EVERY_DAY = 1_000_000
_COMPLETE_SQL = (
    "UPDATE enrollments SET status = 'completed', next_due_at = NULL, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = :now WHERE {enrollment_is_done}"
)
# Two plain INs, not a row-value IN: SQLite scans the whole log for that. The extra pairs
# they match are ignored by the caller's lookup.
_DELIVERIES_SQL = (
    "SELECT enrollment_id, step_key, id, status, message_id, attempts, unknown_outcomes, variant,"
    " first_due_at FROM deliveries WHERE {enrollment_is_wanted} AND {step_is_wanted}"
)
_MOVE_PAST_SQL = (
    "UPDATE enrollments SET last_day = :day, updated_at = :now"
    " WHERE id = :enrollment AND last_day < :day"
)
_INSERT_SQL = (
    "INSERT INTO deliveries (enrollment_id, step_key, status, attempts, unknown_outcomes,"
    " message_id, variant, first_due_at, created_at, updated_at)"
    " VALUES (:enrollment, :key, 'queued', 0, 0, :message_id, :variant, :due, :now, :now)"
)
# A delivery queued before its step tested subjects (a retry) gets its variant on its next claim.
_SET_VARIANT_SQL = "UPDATE deliveries SET variant = :variant WHERE id = :id AND variant IS NULL"
_REQUEUE_SQL = (
    "UPDATE deliveries SET status = 'queued', updated_at = :now WHERE {delivery_is_reused}"
)
# next_due_at moves past the lease by the claimer's clock too, so that the due-query's index
# range skips the claim; the lease itself is what decides.
_LEASE_SQL = (
    "UPDATE enrollments SET next_due_at = :lease, lease_owner = :owner,"
    " lease_expires_at = {lease_until}, updated_at = :now WHERE {enrollment_is_claimed}"
)
# The leases `owner` still holds among some enrollments, extended while it works.
_RENEW_SQL = (
    "UPDATE enrollments SET lease_expires_at = {lease_until}, next_due_at = :lease"
    " WHERE lease_owner = :owner AND {enrollment_is_held}"
)
_HELD_SQL = "SELECT id FROM enrollments WHERE lease_owner = :owner AND {enrollment_is_held}"


def _deliveries_of(sql: PlainSQL, pairs: list[tuple[int, str]]) -> list[tuple[Any, ...]]:
    """The delivery rows of these (enrollment, step key) pairs, and maybe a few others."""
    params: dict[str, Any] = {}
    found = _DELIVERIES_SQL.format(
        enrollment_is_wanted=sql.any_of("enrollment_id", "e", {e for e, _ in pairs}, params),
        step_is_wanted=sql.any_of("step_key", "k", {key for _, key in pairs}, params),
    )
    return sql.rows(found, params)


def claim_due(
    session: Session,
    *,
    plans: Mapping[str, Sequence[tuple[str, int]]],
    now: datetime,
    owner: str,
    lease_until: datetime,
    limit: int,
    new_message_id: Callable[[], str],
    only_enrollment: int | None = None,
    lease: LeaseTime | None = None,
    variants: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    cap: DailyCap | None = None,
    chain: Callable[[str, str, datetime], Chain | None] | None = None,
) -> list[Claim]:
    """Claim up to `limit` due steps for `owner`, each under a lease of `lease.seconds`.

    `plans` maps each running plan's id to its (key, day) pairs in order; an enrollment's
    next step is the first one of its own plan after the day it has reached. An enrollment
    whose lease runs (by the database's clock) is someone else's. On PostgreSQL rows locked
    by another claimer are skipped (FOR UPDATE SKIP LOCKED); on SQLite the transaction
    already holds the single write lock.
    `lease_until` (the claimer's `now` plus the lease) becomes the claimed enrollments'
    `next_due_at`, so that they drop out of the due-query's range meanwhile.

    `variants` names, per plan id and step key, the subjects its test compares: a new delivery
    records the one `choose_variant` gives, in this transaction; a delivery keeps the one it has.

    With a `cap` (several plans run), a lesson that would pass a person's daily cap is not
    claimed but moved to their next local day (store.daily_cap); the subscribers' rows are
    locked too, so that two claimers of one person's plans count one after the other.
    """
    variants = variants or {}
    lease = lease or LeaseTime((lease_until - now).total_seconds())
    sql = PlainSQL(session)
    if not sql.is_sqlite:
        # Every look-up here goes by an index. Planned while the delivery log looked empty
        # (a fresh list, just analysed), PostgreSQL reads it whole, batch after batch.
        sql.run("SET LOCAL enable_seqscan TO off", {})
    at = naive_utc(now)
    params: dict[str, Any] = {"now": at, "limit": limit, **lease.params()}
    only = ""
    if only_enrollment is not None:
        only, params["only"] = " AND enrollments.id = :only", only_enrollment
    locked = "enrollments, subscribers" if cap is not None else "enrollments"
    lock = "" if sql.is_sqlite else f" FOR UPDATE OF {locked} SKIP LOCKED"
    due = _DUE_SQL.format(
        # An IN list, not an array: its text is the same every batch anyway, and as an array
        # the batch took longer (docs/performance.md §17), its values hidden from the planner.
        plans=in_list("plan", plans, params),
        lease_now=lease.now_sql(sql.is_sqlite),
        only=only,
        lock=lock,
    )
    rows = sql.rows(due, params)
    if not rows:
        return []
    # A step removed from the plan while queued or awaiting a retry is settled, never sent.
    for each_plan, plan_steps in plans.items():
        ours = [r[0] for r in rows if r[9] == each_plan]
        if not ours:
            continue
        params = {"now": at}
        sql.run(
            _SETTLE_REMOVED_SQL.format(
                enrollment_is_ours=sql.any_of("enrollment_id", "e", ours, params),
                status_is_pending=sql.any_of("status", "p", PENDING_DELIVERY, params),
                step_is_gone=sql.any_of(
                    "step_key", "k", [key for key, _ in plan_steps], params, negated=True
                ),
            ),
            params,
        )
    upcoming = {r[0]: next(((k, d) for k, d in plans[r[9]] if d > r[1]), None) for r in rows}
    finished = [enrollment for enrollment, step in upcoming.items() if step is None]
    if finished:
        # An edit removed every step left: they graduate, so `then:` chains them as the
        # record of a last step would (before completing: the chain reads them active).
        for row in rows:
            link = None if chain is None or row[0] not in finished else chain(row[9], row[8], now)
            if link is not None:
                graduate = {"enrollment": row[0], "day": _PAST_EVERY_DAY, "sent_at": None}
                sql.run(CHAIN_SQL, graduate | {"now": at} | link.params())
        params = {"now": at}
        done = sql.any_of("id", "e", finished, params)
        sql.run(_COMPLETE_SQL.format(enrollment_is_done=done), params)
    held: set[int] = set()
    if cap is not None:
        lessons = [
            Candidate(r[0], r[5], r[9], r[8], utc_instant(r[3]) or now, step[0])
            for r in rows
            if (step := upcoming[r[0]]) is not None and (r[9], step[0]) not in cap.free_steps
        ]
        held = held_back(sql, cap, lessons, now, lease)
        for enrollment in held:
            upcoming[enrollment] = None
    wanted = [(enrollment, step[0]) for enrollment, step in upcoming.items() if step]
    existing = {(d[0], d[1]): d for d in _deliveries_of(sql, wanted)} if wanted else {}
    chosen: list[dict[str, Any]] = []  # each claim's fields; a new delivery's id comes below
    fresh: list[dict[str, Any]] = []  # deliveries to insert
    late_variants: list[dict[str, Any]] = []  # existing deliveries that get their variant now
    for row in rows:
        enrollment_id, _, due_at, started_at, last_sent_at, sub_id, email, name, tz = row[:9]
        plan, custom = row[9], row[10]
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
        variant = found[7] if found is not None else None
        if variant is None:
            variant = choose_variant(enrollment_id, key, variants.get(plan, {}).get(key, ()))
        due_now = utc_instant(due_at) or now
        if found is None:
            message_id, attempts, unknown, delivery_id = new_message_id(), 0, 0, None
            first_due: datetime | None = due_now
            fresh.append(
                {
                    "enrollment": enrollment_id,
                    "key": key,
                    "message_id": message_id,
                    "variant": variant,
                    "due": naive_utc(due_now),
                    "now": at,
                }
            )
        else:
            delivery_id, message_id, attempts, unknown = found[2], found[4], found[5], found[6]
            first_due = utc_instant(found[8])
            if found[7] is None and variant is not None:
                late_variants.append({"id": delivery_id, "variant": variant})
        chosen.append(
            {
                "delivery_id": delivery_id,
                "message_id": message_id,
                "attempts": attempts,
                "enrollment_id": enrollment_id,
                "step_key": key,
                "step_day": day,
                "due_at": due_now,
                "started_at": utc_instant(started_at) or now,
                "last_sent_at": utc_instant(last_sent_at),
                "subscriber_id": sub_id,
                "email": email,
                "first_name": name,
                "timezone": tz,
                "fields": custom,
                "owner": owner,
                "unknown_outcomes": unknown,
                "variant": variant,
                "plan_id": plan,
                "first_due_at": first_due,
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
    if late_variants:
        sql.run_many(_SET_VARIANT_SQL, late_variants)
    claims = [Claim(**fields) for fields in chosen]
    reused = [c.delivery_id for c in claims if (c.enrollment_id, c.step_key) in existing]
    if reused:
        params = {"now": at}
        reuse = sql.any_of("id", "d", reused, params)
        sql.run(_REQUEUE_SQL.format(delivery_is_reused=reuse), params)
    if claims:
        params = {"lease": naive_utc(lease_until), "owner": owner, "now": at, **lease.params()}
        claimed = sql.any_of("id", "e", [c.enrollment_id for c in claims], params)
        until = lease.until_sql(sql.is_sqlite)
        sql.run(_LEASE_SQL.format(lease_until=until, enrollment_is_claimed=claimed), params)
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
    params: dict[str, Any] = {"owner": owner, "lease": naive_utc(lease_until), **lease.params()}
    ours = sql.any_of("id", "e", enrollment_ids, params)
    until = lease.until_sql(sql.is_sqlite)
    sql.run(_RENEW_SQL.format(lease_until=until, enrollment_is_held=ours), params)
    return {row[0] for row in sql.rows(_HELD_SQL.format(enrollment_is_held=ours), params)}
