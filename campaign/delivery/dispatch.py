"""One sending pass: claim what is due at `now`, render, send over SMTP_CONNECTIONS, record each.

The order per message is the guarantee: the claim is committed before SMTP sees anything; just
before sending, one transaction proves the claim is still this pass's (its lease renewed) and
re-reads the subscriber's status; the outcome is committed right after the server's reply (a
crash in between can repeat only the message each connection had in flight, with its
Message-ID). A pass that lost a claim (paused, slow or cut off past its lease) never sends it.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from campaign.clock import Clock, SystemClock
from campaign.content.compose import Recipient
from campaign.content.snapshot import Content
from campaign.delivery.feed import Feed, LeaseKeeper
from campaign.delivery.pacing import SendBudget, StopWaiting, buckets_for
from campaign.delivery.passes import PassResult, RelayThrottled, SendPolicy, Unrecorded, is_throttle
from campaign.domain import schedule
from campaign.domain.addresses import email_hash
from campaign.domain.plan import Plan
from campaign.domain.transport import Connection, Transport
from campaign.errors import (
    DatabaseError,
    PermanentFailure,
    RenderError,
    TemporaryFailure,
    TransportUnavailable,
    UnknownOutcome,
    UnsendableAddress,
)
from campaign.storage import store
from campaign.storage.db import Database, DriverConnection
from campaign.storage.store import Claim, LeaseTime, ProofRequest

#: how long a recorded outcome waits for a lost database before the pass gives up (seconds).
_RECORD_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

log = logging.getLogger("campaign.dispatch")


T = TypeVar("T")


@dataclass
class Dispatcher:
    """Sends one plan's due steps. Built once by the engine; `run_pass` is called per tick."""

    db: Database
    #: the plan and its composer as they are now: read once per pass, which uses that one
    #: value throughout, whatever a reload swaps in meanwhile.
    content: Callable[[], Content]
    transport: Transport
    clock: Clock
    owner: str
    policy: SendPolicy = field(default_factory=SendPolicy)
    #: the clock leases are measured by; None: the database's own (store.leases).
    lease_clock: Clock | None = None
    #: after a throttle reply no pass sends before this instant (this process).
    relay_paused_until: datetime | None = None
    _throttles: int = 0
    #: how long claims are held, and by which clock.
    leases: LeaseTime = field(init=False)
    #: real time, for what is about this process being alive rather than about the schedule
    #: (waiting for a database, a server's pace): the lease clock when a test injects one.
    _real: Clock = field(init=False)
    _budget: SendBudget = field(init=False)
    _passes: itertools.count[int] = field(init=False)
    #: seconds one connection spent per message lately (0: not measured yet).
    _pace: float = 0.0

    def __post_init__(self) -> None:
        limits = buckets_for(self.policy.rate_per_second, self.policy.rate_per_hour)
        self._budget = SendBudget(self.db, self.clock, limits)
        self._passes = itertools.count(1)
        self.leases = LeaseTime(self.policy.lease_seconds, self.lease_clock)
        # `--now` fixes the schedule's clock; a database restart still takes real seconds.
        self._real = self.lease_clock or SystemClock()

    def run_pass(
        self,
        now: datetime,
        stop: threading.Event | None = None,
        *,
        only_enrollment: int | None = None,
    ) -> PassResult:
        """Send everything due at `now`; return early (releasing claims) once `stop` is set.

        `only_enrollment` limits the pass to one subscriber's enrollment: the welcome email
        sent the moment someone confirms, without waiting for the next tick.
        """
        result = PassResult()
        content = self.content()
        if self.relay_paused_until is not None and now < self.relay_paused_until:
            result.error = f"relay throttled: backing off until {self.relay_paused_until:%H:%M:%S}"
            return result
        # The claims of this pass are this token's: not an earlier pass's of this process.
        token = f"{self.owner}/{next(self._passes)}"
        # The welcome email of one subscriber needs one connection, not a pool.
        workers = 1 if only_enrollment is not None else self.policy.connections
        feed = Feed(lambda: self._claim(content, now, token, only_enrollment, workers), stop)
        results = [PassResult() for _ in range(workers)]
        renew_every = min(self.policy.lease_seconds / 3, 30.0)
        try:
            with LeaseKeeper(self.db, feed, token, self.leases, self.clock, renew_every):
                if workers == 1:
                    self._work(feed, now, results[0], content)
                else:
                    with ThreadPoolExecutor(workers, thread_name_prefix="smtp") as pool:
                        futures = [
                            pool.submit(self._work, feed, now, part, content) for part in results
                        ]
                    for future in futures:
                        future.result()  # an unexpected error in a connection ends the pass
        except Exception:
            # A bug ended the pass: claims never handed to SMTP go back for the next pass at
            # once; the one in flight waits out its lease (it may have been sent).
            unsent = feed.leftovers()
            if unsent:
                self._release(unsent, result)
            raise
        for part in results:
            result.add(part)
        result.claimed = feed.claimed
        result.lost += feed.lost
        result.stopped = feed.stopped or isinstance(feed.halted_by, StopWaiting)
        leftovers = feed.leftovers()
        if leftovers:
            self._release(leftovers, result)
        result.halted_by = feed.halted_by
        self._after_halt(feed.halted_by, now, result)
        if result.lost:
            log.warning(
                "lost %d claim(s): this engine was paused, slow or cut off for longer than "
                "LEASE_SECONDS and another took them over; it did not send them",
                result.lost,
            )
        return result

    def _claim(
        self, content: Content, now: datetime, token: str, only_enrollment: int | None, workers: int
    ) -> list[Claim]:
        """The next batch of claims whose step is itself due at `now`.

        An enrollment's `next_due_at` was computed for the step that was next when it was
        written; after a plan edit removed or moved that step, the step now next may be due
        later. Such a claim goes back with its own time: sending it now would be early.
        """
        while True:
            with self.db.transaction() as session:
                claims = store.claim_due(
                    session,
                    plan_id=content.plan.id,
                    steps=[(step.key, step.day) for step in content.plan.steps],
                    now=now,
                    owner=token,
                    lease_until=now + timedelta(seconds=self.policy.lease_seconds),
                    limit=self._claim_limit(workers),
                    new_message_id=content.composer.new_message_id,
                    only_enrollment=only_enrollment,
                    lease=self.leases,
                )
            # After the claim's commit, not in it: SQLite's one writer (a signup, another
            # sender process) waits for that transaction, and this is ~10 µs a claim.
            early = [
                replace(claim, due_at=due)
                for claim in claims
                if (due := _step_due(content.plan, claim)) is not None and due > now
            ]
            if not early:
                return claims
            with self.db.transaction() as session:
                store.release(session, early)
            later = {claim.delivery_id for claim in early}
            ready = [claim for claim in claims if claim.delivery_id not in later]
            if ready:
                return ready
            # Released claims are due later, so the next look-up cannot return them again.

    def _claim_limit(self, workers: int) -> int:
        """A batch this pass can send well within one lease, at the rate limits and at the
        pace the server answered lately: claims waiting their turn are held from others."""
        window = self.policy.lease_seconds / 2
        limit = self.policy.batch_size
        if self._budget.rate > 0:
            limit = min(limit, int(self._budget.rate * window))
        if self._pace > 0:
            limit = min(limit, int(window / self._pace * workers))
        return max(limit, 1)

    def _work(self, feed: Feed, now: datetime, result: PassResult, content: Content) -> None:
        """One SMTP connection: deliver claims from the feed until it runs dry or halts."""
        unrecorded = Unrecorded()
        driver = self.db.driver_connection()
        with ExitStack() as stack:
            stack.callback(driver.close)
            # The SMTP connection: closed and replaced after an unexpected error mid-message.
            session = stack.enter_context(ExitStack())
            connection: Connection | None = None
            while True:
                try:
                    claim = feed.next()
                except DatabaseError as exc:
                    feed.halt(exc)
                    break
                if claim is None:
                    break
                try:
                    if connection is None:
                        connection = session.enter_context(self.transport.open())
                    self._deliver(
                        claim, connection, now, result, (driver, unrecorded), feed, content
                    )
                except _SessionSpoiled:
                    session.close()
                    connection = None
                except (TransportUnavailable, RelayThrottled, DatabaseError, StopWaiting) as exc:
                    # Not this message's fault: it goes back unsent, and so does the rest.
                    feed.halt(exc, unsent=claim)
                    break
                except Exception as exc:
                    feed.halt(exc)
                    self._record_sent(driver, unrecorded, feed, result)
                    raise
                except BaseException as exc:  # the process is dying: like a kill, record nothing
                    feed.halt(exc)
                    raise
            self._record_sent(driver, unrecorded, feed, result)

    def _after_halt(self, reason: BaseException | None, now: datetime, result: PassResult) -> None:
        if isinstance(reason, TransportUnavailable | DatabaseError):
            result.error = reason.message
        elif isinstance(reason, RelayThrottled):
            # Slow down as asked: no attempt used, no sending until the backoff ends
            # (doubling while the server keeps asking).
            self._throttles += 1
            delay = schedule.retry_delay(self._throttles, self.policy.retry_base_seconds, 1.0)
            self.relay_paused_until = now + delay
            result.error = f"relay throttled ({reason.message}); backing off {delay}"

    def _deliver(
        self,
        claim: Claim,
        connection: Connection,
        now: datetime,
        result: PassResult,
        records: tuple[DriverConnection, Unrecorded],
        feed: Feed,
        content: Content,
    ) -> None:
        plan = content.plan
        step = plan.step_by_key(claim.step_key)
        if step is None:  # the plan changed since the claim: look again next pass
            self._release([claim], result)
            feed.finish(claim)
            return
        if _too_late(plan, claim, now):
            reason = f"more than {plan.skip_after} late (catch_up)"
            next_due = _next_due(plan, claim, None)
            late = partial(
                store.record_late_skip, claim=claim, now=now, reason=reason, next_due_at=next_due
            )
            if self._settle(claim, late, feed, result):
                result.skipped += 1
            return
        recipient = Recipient(claim.subscriber_id, claim.email, claim.first_name)
        try:
            composed = content.composer.compose(
                step,
                recipient,
                message_id=claim.message_id,
                now=now,
                delivery_id=claim.delivery_id,
            )
        except RenderError as exc:
            # A plan edit may fix it: retried like a 4xx.
            log.warning("render failed for delivery %s: %s", claim.delivery_id, exc.message)
            self._temporary(claim, now, exc.message, result, feed, plan)
            return
        except (UnsendableAddress, ValueError) as exc:
            # Data no template can fix (an address no envelope can carry, a name no header
            # can): fail this one for good, not the pass; the subscriber is not bounced.
            reason = exc.message if isinstance(exc, UnsendableAddress) else str(exc)
            self._failed(claim, now, f"cannot build message: {reason}", result, feed, plan)
            return
        except Exception as exc:
            # A fault of ours met by this subscriber's data: their retry, not the pass's end.
            log.warning("cannot build delivery %s", claim.delivery_id, exc_info=True)
            error = f"cannot build message: {_described(exc)}"
            self._temporary(claim, now, error, result, feed, plan)
            return
        # One transaction records the previous message's 250, proves this claim is still
        # ours and re-reads the subscriber's status: the last moment before DATA.
        driver, unrecorded = records
        if not self._cleared_to_send(driver, unrecorded, claim, now, result, feed):
            return
        # After a long wait for our turn under a rate limit, prove it all again.
        waited = self._budget.acquire(feed.stop)
        if waited > 1.0 and not self._cleared_to_send(driver, unrecorded, claim, now, result, feed):
            return
        started = self._real.monotonic()
        try:
            connection.send(composed.envelope, composed.data)
        except UnknownOutcome as exc:
            self._unknown(claim, now, exc.message, result, feed, plan)
        except TemporaryFailure as exc:
            if is_throttle(exc):
                raise RelayThrottled(
                    exc.message, smtp_code=exc.smtp_code, enhanced_code=exc.enhanced_code
                ) from exc
            self._temporary(claim, now, exc.message, result, feed, plan)
        except (TransportUnavailable, DatabaseError, StopWaiting):
            raise  # about every message, not this one: _work hands the rest back
        except PermanentFailure as exc:
            rejected = partial(self._rejected, claim=claim, now=now, failure=exc, plan=plan)
            if not self._settle(claim, rejected, feed, result):
                return
            log.warning(
                "delivery %s to subscriber %s rejected: %s",
                claim.delivery_id,
                claim.subscriber_id,
                exc.message,
            )
            if exc.bounce:
                result.bounced += 1
            else:
                result.failed += 1
        except Exception as exc:
            # Not a reply but a fault of ours sending this message: retried like a 4xx. The
            # session may be stuck mid-transaction, so the next message gets a new one.
            log.warning(
                "delivery %s: unexpected error while sending", claim.delivery_id, exc_info=True
            )
            error = f"unexpected error while sending: {_described(exc)}"
            self._temporary(claim, now, error, result, feed, plan)
            raise _SessionSpoiled from exc
        else:
            self._note_pace(self._real.monotonic() - started)
            sent_at = self.clock.now()
            next_due = _next_due(plan, claim, sent_at)
            # Committed with the next message's proof (or when this connection ends).
            unrecorded.hold(store.Accepted(claim, sent_at, next_due))
            result.sent += 1
            self._throttles = 0

    def _cleared_to_send(
        self,
        driver: DriverConnection,
        unrecorded: Unrecorded,
        claim: Claim,
        now: datetime,
        result: PassResult,
        feed: Feed,
    ) -> bool:
        """Record the previous 250, then prove `claim` is still this pass's (renewing its
        lease) and that its subscriber is still active: True when it may go to SMTP."""
        accepted = unrecorded.take()
        request = ProofRequest(claim, self.leases)
        proof = self._retrying(lambda: store.record_and_prove(driver, accepted, request))
        if accepted is not None:
            self._after_sent(accepted, proof.recorded, feed, result)
        if proof.status != "active":
            # Leaving settles the step as skipped and ends the lease; if we still hold it
            # (the status changed otherwise), settle it here.
            reason = "subscriber left before sending"
            if proof.held:
                skipped = partial(store.record_skipped, claim=claim, now=now, reason=reason)
                self._record(skipped)
            feed.finish(claim)
            result.skipped += 1
            return False
        if not proof.held:
            log.debug("delivery %s: claim lost to another engine; not sending", claim.delivery_id)
            result.lost += 1
            feed.finish(claim)
            return False
        return True

    def _record_sent(
        self, driver: DriverConnection, unrecorded: Unrecorded, feed: Feed, result: PassResult
    ) -> None:
        """Commit the connection's last 250, if one is not recorded yet."""
        accepted = unrecorded.take()
        if accepted is not None:
            proof = self._retrying(lambda: store.record_and_prove(driver, accepted))
            self._after_sent(accepted, proof.recorded, feed, result)

    def _after_sent(
        self, accepted: store.Accepted, recorded: bool | None, feed: Feed, result: PassResult
    ) -> None:
        feed.finish(accepted.claim)
        if not recorded:
            # Another engine sent it too: this one was stopped past its lease mid-send.
            result.lost += 1
            log.warning(
                "delivery %s was accepted twice: another engine had sent it already (this one "
                "was paused past its lease while sending it)",
                accepted.claim.delivery_id,
            )

    def _note_pace(self, seconds: float) -> None:
        """Keep a moving average of the time one message takes on a connection."""
        self._pace = seconds if self._pace == 0 else 0.8 * self._pace + 0.2 * seconds

    def record_heartbeat(
        self, started_at: datetime, now: datetime, seconds: float, paused: str | None = None
    ) -> None:
        """Say this engine finished a pass at `now`, and whether sending is paused and why
        (read by /healthz and /metrics, across instances)."""
        with self.db.transaction() as session:
            store.beat(session, self.owner, started_at, now, seconds, paused)

    def _rejected(
        self, session: Session, claim: Claim, now: datetime, failure: PermanentFailure, plan: Plan
    ) -> bool:
        if failure.bounce:
            return store.record_bounce(
                session, claim, now, failure.message, email_hash(claim.email)
            )
        return store.record_failed(
            session, claim, now, failure.message, _next_due(plan, claim, None)
        )

    def _settle(
        self, claim: Claim, write: Callable[..., bool], feed: Feed, result: PassResult
    ) -> bool:
        """Record a claim's outcome, if the claim is still this pass's (see `_record`)."""
        recorded = self._record(write)
        feed.finish(claim)
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
            result.skipped += 1
        else:
            log.debug("delivery %s: claim lost before its outcome was recorded", claim.delivery_id)
            result.lost += 1
        return False

    def _subscriber_left(self, claim: Claim) -> bool:
        with self.db.transaction() as session:
            subscriber = store.subscriber_by_id(session, claim.subscriber_id)
        return subscriber is None or subscriber.status != "active"

    def _failed(
        self, claim: Claim, now: datetime, error: str, result: PassResult, feed: Feed, plan: Plan
    ) -> None:
        """A failure no retry can cure, about this message only: the step fails, the plan goes
        on, the subscriber is not bounced."""
        log.warning("delivery %s failed: %s", claim.delivery_id, error)
        failed = partial(
            store.record_failed,
            claim=claim,
            now=now,
            error=error,
            next_due_at=_next_due(plan, claim, None),
        )
        if self._settle(claim, failed, feed, result):
            result.failed += 1

    def _record(self, write: Callable[..., T]) -> T:
        """Commit what the mail server answered (see `_retrying`)."""

        def attempt() -> T:
            with self.db.transaction(flush_to_disk=False) as session:
                return write(session)

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a recording `attempt`, waiting out a database restart.

        Until it commits the message is unrecorded: given up, its claim would expire and the
        message go again. So wait a while for the database; past that, the pass stops.
        """
        for delay in _RECORD_RETRIES:
            try:
                return attempt()
            except DatabaseError as exc:
                log.warning("cannot record a delivery (%s); retrying in %.1fs", exc.message, delay)
                self._real.sleep(delay)
        return attempt()

    def _temporary(
        self, claim: Claim, now: datetime, error: str, result: PassResult, feed: Feed, plan: Plan
    ) -> None:
        attempts = claim.attempts + 1
        if attempts < self.policy.max_attempts:
            jitter = random.uniform(0.5, 1.5)  # noqa: S311
            retry_at = now + schedule.retry_delay(attempts, self.policy.retry_base_seconds, jitter)
            retry = partial(
                store.record_retry, claim=claim, now=now, error=error, retry_at=retry_at
            )
            if self._settle(claim, retry, feed, result):
                result.retried += 1
            return
        # Give up on this step only: the subscriber stays active and the plan goes on,
        # unless this mailbox has now soft-bounced on SOFT_BOUNCE_LIMIT steps in a row.
        failures: list[int] = [0]

        def give_up(session: Session) -> bool:
            if not store.record_failed(session, claim, now, error, _next_due(plan, claim, None)):
                return False
            failures[0] = store.consecutive_failures(session, claim.subscriber_id)
            if failures[0] >= self.policy.soft_bounce_limit:
                store.stop_mailing(
                    session, claim.subscriber_id, "bounced", email_hash(claim.email), now
                )
            return True

        if not self._settle(claim, give_up, feed, result):
            return
        result.failed += 1
        if failures[0] >= self.policy.soft_bounce_limit:
            log.warning(
                "subscriber %s suppressed: %d steps in a row failed (last: %s)",
                claim.subscriber_id,
                failures[0],
                error,
            )

    def _unknown(
        self, claim: Claim, now: datetime, error: str, result: PassResult, feed: Feed, plan: Plan
    ) -> None:
        """No reply to the final dot: the server may have the message. Try once more after a
        delay (same Message-ID), or settle it as unknown; never a soft bounce."""
        retry_at = None
        if claim.unknown_outcomes < self.policy.unknown_outcome_retries:
            jitter = random.uniform(0.5, 1.5)  # noqa: S311
            delay = schedule.retry_delay(claim.attempts + 1, self.policy.retry_base_seconds, jitter)
            retry_at = now + delay
        unknown = partial(
            store.record_unknown,
            claim=claim,
            now=now,
            error=error,
            retry_at=retry_at,
            next_due_at=_next_due(plan, claim, now),
        )
        if not self._settle(claim, unknown, feed, result):
            return
        result.unknown += 1
        log.warning(
            "delivery %s: outcome unknown (%s); %s",
            claim.delivery_id,
            error,
            f"trying once more at {retry_at:%Y-%m-%d %H:%M:%S}" if retry_at else "not sent again",
        )

    def _release(self, claims: list[Claim], result: PassResult) -> None:
        self._record(lambda session: store.release(session, claims))
        result.released += len(claims)


class _SessionSpoiled(Exception):
    """An unexpected error mid-message: the SMTP session's state is unknown."""


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _zone_or_utc(name: str) -> ZoneInfo:
    try:
        return schedule.zone(name)
    except ValueError:
        return schedule.zone(schedule.DEFAULT_TIMEZONE)


def _too_late(plan: Plan, claim: Claim, now: datetime) -> bool:
    """Under `catch_up: {skip_after: H}`, a daily step H hours past its time is not sent.

    The welcome email (day 0) always goes: it carries what the signup promised.
    """
    step = plan.step_by_key(claim.step_key)
    if step is None or plan.skip_after is None or step.day == 0:
        return False
    nominal = schedule.nominal_due(plan, step, claim.started_at, _zone_or_utc(claim.timezone))
    return now - nominal > plan.skip_after


def _step_due(plan: Plan, claim: Claim) -> datetime | None:
    """When the claimed step is due under `plan` (None: not in the plan)."""
    step = plan.step_by_key(claim.step_key)
    if step is None:
        return None
    tz = _zone_or_utc(claim.timezone)
    return schedule.due_at(plan, step, claim.started_at, tz, claim.last_sent_at)


def _next_due(plan: Plan, claim: Claim, sent_at: datetime | None) -> datetime | None:
    """When the step after `claim` is due; None when the plan is finished."""
    following = next((s for s in plan.steps if s.day > claim.step_day), None)
    if following is None:
        return None
    tz = _zone_or_utc(claim.timezone)
    last_sent = sent_at or claim.last_sent_at
    return schedule.due_at(plan, following, claim.started_at, tz, last_sent)
