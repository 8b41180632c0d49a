"""Numbers for operators and marketers: subscribers by status, and per step sent/failed/pending."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal, NamedTuple, TypedDict

from sqlalchemy.orm import Session

from campaign.domain.plan import Plan
from campaign.domain.statuses import DeliveryStatus, SubscriberStatus
from campaign.errors import DatabaseRefusesWrites
from campaign.insights.subject_tests import SubjectTest, subject_tests
from campaign.storage import store
from campaign.storage.db import IN_RECOVERY, READ_ONLY, READ_ONLY_FILE, Database

#: An unsubscribe this soon after an email is counted against that email's step.
UNSUBSCRIBE_WINDOW = timedelta(hours=48)


#: The counts of a step, by name (what a table of `StepStats` may show).
StepCount = Literal[
    "sent", "bounced", "failed", "skipped", "unknown", "pending", "unsubscribes_48h", "clicks"
]


class StepStats(TypedDict):
    """One step's numbers (a row of `campaign stats`)."""

    key: str
    day: int
    sent: int
    bounced: int
    failed: int
    skipped: int
    #: emails whose server never answered the end of the message, at least once.
    unknown: int
    pending: int
    unsubscribes_48h: int
    clicks: int


class Problem(TypedDict):
    """Why some emails failed or wait for a retry: their status, last error and number."""

    status: str
    reason: str
    count: int


class Stats(TypedDict):
    """What `campaign stats --json` prints, and the report page shows: keys in this order."""

    plan: str
    name: str
    subscribers: dict[str, int]
    steps: list[StepStats]
    #: commonest first
    problems: list[Problem]
    #: per step that tests (or tested) its subject: each variant's numbers and a verdict.
    subject_tests: list[SubjectTest]


def stats(db: Database, plan: Plan) -> Stats:
    """Subscribers by status and, per step, how many were sent, failed, and are still to go."""
    with db.read() as session:
        by_status = store.count_subscribers_by_status(session)
        deliveries = store.count_deliveries_by_step(session, plan.id)
        waiting = store.count_active_by_last_day(session, plan.id)
        leavers = store.unsubscribes_after_step(session, plan.id, UNSUBSCRIBE_WINDOW)
        clicks = store.clicks_by_step(session, plan.id)
        unknown = store.unknown_outcomes_by_step(session, plan.id)
        problems = store.failure_reasons(session, plan.id)
        variants = store.counts_by_variant(session, plan.id)
        variant_leavers = store.unsubscribes_after_variant(session, plan.id, UNSUBSCRIBE_WINDOW)
    steps: list[StepStats] = []
    for step in plan.steps:
        # pending: active enrollments that have not got past this step yet.
        pending = sum(count for day, count in waiting.items() if day < step.day)
        steps.append(
            {
                "key": step.key,
                "day": step.day,
                "sent": deliveries.get((step.key, DeliveryStatus.SENT), 0),
                "bounced": deliveries.get((step.key, DeliveryStatus.BOUNCED), 0),
                "failed": deliveries.get((step.key, DeliveryStatus.FAILED), 0),
                "skipped": deliveries.get((step.key, DeliveryStatus.SKIPPED), 0),
                "unknown": unknown.get(step.key, 0),
                "pending": pending,
                "unsubscribes_48h": leavers.get(step.key, 0),
                "clicks": clicks.get(step.key, 0),
            }
        )
    return {
        "plan": plan.id,
        "name": plan.name,
        "subscribers": {str(status): by_status.get(status, 0) for status in SubscriberStatus},
        "steps": steps,
        # Why emails failed or wait for a retry, commonest first (last_error of each).
        "problems": [
            {"status": str(problem.status), "reason": problem.reason, "count": problem.count}
            for problem in problems
        ],
        "subject_tests": subject_tests(plan, variants, variant_leavers),
    }


class Snapshot(TypedDict):
    """What /metrics reports from the database (the keywords of `Metrics.update`)."""

    emails: Mapping[tuple[str, str], int]
    subscribers: Mapping[str, int]
    backlog: int
    oldest_due_age: float | None
    suppressions: Mapping[str, int]
    last_pass_age: float | None
    paused: bool


def operational_snapshot(db: Database, plan: Plan, now: datetime) -> Snapshot:
    """What /metrics reports: database numbers, the last pass's age, whether sending is paused."""
    with db.read() as session:
        beat = store.latest_heartbeat(session)
        oldest = store.oldest_due_at(session, plan.id, now)
        return {
            "emails": store.count_deliveries_by_step(session, plan.id),
            "subscribers": store.count_subscribers_by_status(session),
            "backlog": store.due_count(session, plan.id, now),
            "oldest_due_age": (now - oldest).total_seconds() if oldest else None,
            "suppressions": store.count_suppressions_by_reason(session),
            "last_pass_age": (now - beat.at).total_seconds() if beat else None,
            "paused": bool(beat and beat.paused_reason),
        }


class SendingHealth(NamedTuple):
    #: seconds since any scheduler finished a pass (None: never, or unknown)
    last_pass_age: float | None
    #: why the last pass found sending paused (the mail server), from its heartbeat
    paused: str | None
    #: why the database refuses writes, if it does: no pass can run, nor say so in a heartbeat
    refuses_writes: str | None = None


def sending_health(db: Database, now: datetime) -> SendingHealth:
    """The last pass's age, why sending is paused, and whether the database refuses writes
    (as far as a cheap look tells: read-only or in recovery, a read-only file, or a writer's
    BEGIN that cannot start)."""
    try:
        if db.is_sqlite:
            # A writer's BEGIN, outside the writers' queue; the heartbeat in a read.
            db.probe_writes()
            with db.read() as session:
                beat = store.latest_heartbeat(session)
            refusal = _file_refusal(db)
        else:  # a read-only transaction would hide the server's own transaction_read_only
            with db.transaction() as session:
                beat = store.latest_heartbeat(session)
                refusal = _server_refusal(db, session)
    except DatabaseRefusesWrites as exc:
        return SendingHealth(None, None, exc.reason)
    if beat is None:
        return SendingHealth(None, None, refusal)
    return SendingHealth((now - beat.at).total_seconds(), beat.paused_reason, refusal)


class PublicHealth(TypedDict):
    """The /healthz answer anyone may see."""

    status: str
    reason: str
    last_pass_age_seconds: float | None
    stale_after_seconds: float


class Health(NamedTuple):
    """Whether this deployment is healthy: a status and a short reason code anyone may see, and
    a detail for operators only (it may name the database, the mail server, driver errors)."""

    #: "ok", "degraded" (sending is paused or late) or "error" (the database cannot be used)
    status: str
    #: one of HEALTH_REASONS
    reason: str
    detail: str
    last_pass_age: float | None
    stale_after: float

    @property
    def http_status(self) -> int:
        """200 while the pages and sending work: a refused plan edit leaves the last good plan
        sending, and a load balancer must not drop the signup pages over a marketer's typo."""
        return 200 if self.reason in ("ok", "plan-edit-refused") else 503

    def public(self) -> PublicHealth:
        """What an anonymous client is told: nothing about hosts, URLs or error text."""
        return {
            "status": self.status,
            "reason": self.reason,
            "last_pass_age_seconds": self.last_pass_age,
            "stale_after_seconds": self.stale_after,
        }


#: The reason codes /healthz may give, most serious first.
HEALTH_REASONS = (
    "database-unreachable",
    "database-refuses-writes",
    "sending-paused",
    "pass-failed",
    "no-pass-yet",
    "stale",
    "plan-edit-refused",
    "ok",
)


def health(
    db: Database,
    now: datetime,
    *,
    tick_seconds: float,
    paused_here: str | None = None,
    pass_failed_here: str | None = None,
    plan_edit_refused_here: str | None = None,
) -> Health:
    """The deployment's health: the database, sending (paused by the latest heartbeat or by
    `paused_here`, this process's scheduler), whether this process's last pass died of an
    unexpected error (`pass_failed_here`), whether a pass finished recently, and whether the
    last saved plan edit was refused (`plan_edit_refused_here`: the last good plan sends on)."""
    stale_after = max(3 * tick_seconds, 120.0)
    try:
        age, paused, refusal = sending_health(db, now)
    except Exception as exc:  # any failure to read the database means it cannot be used
        return Health(
            "error", "database-unreachable", f"database unreachable: {exc}", None, stale_after
        )
    if refusal is not None:
        # No pass can record anything, nor write a heartbeat that says so.
        detail = f"{DatabaseRefusesWrites(refusal).message}: sending is paused"
        return Health("error", "database-refuses-writes", detail, age, stale_after)
    paused = paused or paused_here
    if paused:
        return Health("degraded", "sending-paused", f"sending paused: {paused}", age, stale_after)
    if pass_failed_here:
        return Health("degraded", "pass-failed", pass_failed_here, age, stale_after)
    if age is None:
        return Health(
            "degraded", "no-pass-yet", "no scheduler has finished a pass yet", None, stale_after
        )
    if age > stale_after:
        detail = f"the last pass finished {age:.0f} s ago (more than {stale_after:.0f} s)"
        return Health("degraded", "stale", detail, age, stale_after)
    if plan_edit_refused_here:
        detail = f"plan edit refused: {plan_edit_refused_here}"
        return Health("degraded", "plan-edit-refused", detail, age, stale_after)
    return Health("ok", "ok", "ok", age, stale_after)


def write_refusal(db: Database) -> str | None:
    """Why the database refuses writes, as far as a cheap look tells; None when it does not."""
    if db.is_sqlite:
        return _file_refusal(db)
    try:
        with db.transaction() as session:
            return _server_refusal(db, session)
    except DatabaseRefusesWrites as exc:
        return exc.reason


def _file_refusal(db: Database) -> str | None:
    file = db.sqlite_file
    if file is None or (os.access(file, os.W_OK) and os.access(file.parent, os.W_OK)):
        return None
    return READ_ONLY_FILE


def _server_refusal(db: Database, session: Session) -> str | None:
    # Belongs with the heartbeat queries in store; kept here while store is being changed.
    row = session.connection().exec_driver_sql(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
    )
    in_recovery, read_only = row.one()
    if not in_recovery and read_only != "on":
        return None
    # This connection is read-only for good (a failover, a standby): look on new ones next.
    db.discard_connections()
    return IN_RECOVERY if in_recovery else READ_ONLY


def active_by_last_day(db: Database, plan: Plan) -> dict[int, int]:
    """Active subscribers by the plan day they have reached (for `plan diff`)."""
    with db.read() as session:
        return store.count_active_by_last_day(session, plan.id)
