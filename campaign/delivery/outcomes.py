"""What each message of a pass came to, committed: a 250 (held until the next message's proof),
a retry, a failure, a bounce, an unknown outcome or a skip; each waits out a database restart,
and a mailbox that keeps soft-bouncing is suppressed."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy.orm import Session

from campaign.clock import Clock
from campaign.delivery import timing
from campaign.delivery.chaining import chain_for
from campaign.delivery.feed import Feed
from campaign.delivery.passes import PassResult, SendPolicy
from campaign.domain.addresses import email_hash
from campaign.domain.plan import Plan
from campaign.domain.plan_catalog import PlanCatalog
from campaign.domain.statuses import SubscriberStatus
from campaign.errors import DatabaseError, PermanentFailure
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.store import Accepted, Claim, DeliveryRecorder, LeaseTime, ProofRequest

#: how long a recorded outcome waits for a lost database before the pass gives up (seconds).
_RECORD_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

log = logging.getLogger("campaign.dispatch")

T = TypeVar("T")


def retrying(attempt: Callable[[], T], real: Clock) -> T:
    """Run a recording `attempt`, waiting out a database restart (in `real` seconds).

    Until it commits the message is unrecorded: given up, its claim would expire and the
    message go again. So wait a while for the database; past that, the pass stops.
    """
    for delay in _RECORD_RETRIES:
        try:
            return attempt()
        except DatabaseError as exc:
            log.warning("cannot record a delivery (%s); retrying in %.1fs", exc.message, delay)
            real.sleep(delay)
    return attempt()


def record(db: Database, write: Callable[[Session], T], real: Clock) -> T:
    """Commit what the mail server answered, in a per-email transaction (see `retrying`)."""

    def attempt() -> T:
        with db.transaction(flush_to_disk=False) as session:
            return write(session)

    return retrying(attempt, real)


def release(db: Database, claims: list[Claim], result: PassResult, real: Clock) -> None:
    """Give `claims` back unsent: due again at their old time, for the next pass."""
    record(db, lambda session: store.release(session, claims), real)
    result.released += len(claims)


class Outcomes:
    """Records what one SMTP connection's messages came to, and counts it in `result`.

    A 250 is held (one at a time: a crash may repeat only that message) and committed with
    the next message's proof, or by `record_last_sent` when the connection is done. Every
    other outcome is committed at once, if the claim is still this pass's.
    """

    def __init__(
        self,
        db: Database,
        recorder: DeliveryRecorder,
        plans: PlanCatalog,
        policy: SendPolicy,
        leases: LeaseTime,
        feed: Feed,
        result: PassResult,
        real: Clock,
    ) -> None:
        self._db = db
        self._recorder = recorder
        self._plans = plans
        self._policy = policy
        self._leases = leases
        self._feed = feed
        self._result = result
        self._real = real
        self._unrecorded: Accepted | None = None

    def accepted(self, claim: Claim, sent_at: datetime) -> None:
        """The server accepted `claim`'s message (250) at `sent_at`."""
        if self._unrecorded is not None:  # would widen the crash window the README promises
            raise RuntimeError("a second unrecorded message on one connection")
        next_due = timing.next_due(self._plan(claim), claim, sent_at)
        chain = chain_for(self._plans, claim, sent_at) if next_due is None else None
        self._unrecorded = Accepted(claim, sent_at, next_due, chain)
        self._result.sent += 1

    def cleared_to_send(self, claim: Claim, now: datetime) -> bool:
        """Record the previous 250, then prove `claim` is still this pass's (renewing its
        lease) and that its subscriber is still active: True when it may go to SMTP."""
        accepted, self._unrecorded = self._unrecorded, None
        request = ProofRequest(claim, self._leases)
        proof = retrying(lambda: self._recorder.record_and_prove(accepted, request), self._real)
        if accepted is not None:
            self._after_sent(accepted, proof.recorded)
        if proof.status != SubscriberStatus.ACTIVE:
            # Leaving settles the step as skipped and ends the lease; if we still hold it
            # (the status changed otherwise), settle it here.
            reason = "subscriber left before sending"
            if proof.held:
                skipped = partial(store.record_skipped, claim=claim, now=now, reason=reason)
                record(self._db, skipped, self._real)
            self._feed.finish(claim)
            self._result.skipped += 1
            return False
        if not proof.held:
            log.debug("delivery %s: claim lost to another engine; not sending", claim.delivery_id)
            self._result.lost += 1
            self._feed.finish(claim)
            return False
        return True

    def record_last_sent(self) -> None:
        """Commit the connection's last 250, if one is not recorded yet."""
        accepted, self._unrecorded = self._unrecorded, None
        if accepted is not None:
            recorded = retrying(lambda: self._recorder.record_sent(accepted), self._real)
            self._after_sent(accepted, recorded)

    def _after_sent(self, accepted: Accepted, recorded: bool | None) -> None:
        self._feed.finish(accepted.claim)
        claim = accepted.claim
        if recorded and claim.step_key == self._plan(claim).steps[0].key:
            # The enrollment starts at confirmation (or at signup without double opt-in).
            latency = (accepted.sent_at - claim.started_at).total_seconds()
            self._result.welcome_seconds.append(max(latency, 0.0))
        if not recorded:
            # Another engine sent it too: this one was stopped past its lease mid-send.
            self._result.lost += 1
            log.warning(
                "delivery %s was accepted twice: another engine had sent it already (this one "
                "was paused past its lease while sending it)",
                accepted.claim.delivery_id,
            )

    def late(self, claim: Claim, now: datetime) -> None:
        """Skip a step too late to be worth sending (catch_up: skip_after) and move on."""
        plan = self._plan(claim)
        reason = f"more than {plan.skip_after} late (catch_up)"
        next_due = timing.next_due(plan, claim, None)
        late = partial(
            store.record_late_skip,
            claim=claim,
            now=now,
            reason=reason,
            next_due_at=next_due,
            chain=chain_for(self._plans, claim, now),
        )
        if self._settle(claim, late):
            self._result.skipped += 1

    def temporary(self, claim: Claim, now: datetime, error: str) -> None:
        """A failure that may pass: retried later, up to MAX_ATTEMPTS; then the step fails."""
        attempts = claim.attempts + 1
        if attempts < self._policy.max_attempts:
            jitter = random.uniform(0.5, 1.5)  # noqa: S311
            retry_at = timing.retry_at(now, attempts, self._policy.retry_base_seconds, jitter)
            retry = partial(
                store.record_retry, claim=claim, now=now, error=error, retry_at=retry_at
            )
            if self._settle(claim, retry):
                self._result.retried += 1
            return
        # Give up on this step only: the subscriber stays active and the plan goes on,
        # unless this mailbox has now soft-bounced on SOFT_BOUNCE_LIMIT steps in a row.
        failures: list[int] = [0]
        limit = self._policy.soft_bounce_limit

        def give_up(session: Session) -> bool:
            next_due = timing.next_due(self._plan(claim), claim, None)
            chain = chain_for(self._plans, claim, now)
            if not store.record_failed(session, claim, now, error, next_due, chain):
                return False
            failures[0] = store.consecutive_failures(session, claim.subscriber_id)
            if failures[0] >= limit:
                store.stop_mailing(
                    session,
                    claim.subscriber_id,
                    SubscriberStatus.BOUNCED,
                    email_hash(claim.email),
                    now,
                )
            return True

        if not self._settle(claim, give_up):
            return
        self._result.failed += 1
        if failures[0] >= limit:
            log.warning(
                "subscriber %s suppressed: %d steps in a row failed (last: %s)",
                claim.subscriber_id,
                failures[0],
                error,
            )

    def failed(self, claim: Claim, now: datetime, error: str) -> None:
        """A failure no retry can cure, about this message only: the step fails, the plan goes
        on, the subscriber is not bounced."""
        log.warning("delivery %s failed: %s", claim.delivery_id, error)
        failed = partial(
            store.record_failed,
            claim=claim,
            now=now,
            error=error,
            next_due_at=timing.next_due(self._plan(claim), claim, None),
            chain=chain_for(self._plans, claim, now),
        )
        if self._settle(claim, failed):
            self._result.failed += 1

    def rejected(self, claim: Claim, now: datetime, failure: PermanentFailure) -> None:
        """The server refused the message for good: a bounce (the address does not exist)
        stops mailing the subscriber; any other refusal fails this step only."""

        def write(session: Session) -> bool:
            if failure.bounce:
                return store.record_bounce(
                    session, claim, now, failure.message, email_hash(claim.email)
                )
            next_due = timing.next_due(self._plan(claim), claim, None)
            chain = chain_for(self._plans, claim, now)
            return store.record_failed(session, claim, now, failure.message, next_due, chain)

        if not self._settle(claim, write):
            return
        log.warning(
            "delivery %s to subscriber %s rejected: %s",
            claim.delivery_id,
            claim.subscriber_id,
            failure.message,
        )
        if failure.bounce:
            self._result.bounced += 1
        else:
            self._result.failed += 1

    def unknown(self, claim: Claim, now: datetime, error: str) -> None:
        """No reply to the final dot: the server may have the message. Try once more after a
        delay (same Message-ID), or settle it as unknown; never a soft bounce."""
        retry_at = None
        if claim.unknown_outcomes < self._policy.unknown_outcome_retries:
            jitter = random.uniform(0.5, 1.5)  # noqa: S311
            base = self._policy.retry_base_seconds
            retry_at = timing.retry_at(now, claim.attempts + 1, base, jitter)
        unknown = partial(
            store.record_unknown,
            claim=claim,
            now=now,
            error=error,
            retry_at=retry_at,
            next_due_at=timing.next_due(self._plan(claim), claim, now),
            chain=chain_for(self._plans, claim, now),
        )
        if not self._settle(claim, unknown):
            return
        self._result.unknown += 1
        log.warning(
            "delivery %s: outcome unknown (%s); %s",
            claim.delivery_id,
            error,
            f"trying once more at {retry_at:%Y-%m-%d %H:%M:%S}" if retry_at else "not sent again",
        )

    def release(self, claims: Iterable[Claim]) -> None:
        """Give claims back unsent (the plan no longer has their step)."""
        given_back = list(claims)
        release(self._db, given_back, self._result, self._real)
        for claim in given_back:
            self._feed.finish(claim)

    def _plan(self, claim: Claim) -> Plan:
        """The claim's own plan (the pass claimed only enrollments of running plans)."""
        return self._plans.plans[claim.plan_id]

    def _settle(self, claim: Claim, write: Callable[[Session], bool]) -> bool:
        """Record a claim's outcome, if the claim is still this pass's: False when it is not
        (another engine took it over, or its subscriber left meanwhile)."""
        recorded = record(self._db, write, self._real)
        self._feed.finish(claim)
        if recorded:
            return True
        if self._subscriber_left(claim):
            # Their unsubscribe (or a bounce) settled the step as skipped meanwhile: no engine
            # lost anything.
            log.info(
                "delivery %s: subscriber %s left while it was being sent; the step stays skipped",
                claim.delivery_id,
                claim.subscriber_id,
            )
            self._result.skipped += 1
        else:
            log.debug("delivery %s: claim lost before its outcome was recorded", claim.delivery_id)
            self._result.lost += 1
        return False

    def _subscriber_left(self, claim: Claim) -> bool:
        with self._db.transaction() as session:
            subscriber = store.subscriber_by_id(session, claim.subscriber_id)
        return subscriber is None or subscriber.status != "active"
