"""One sending pass: claim what is due at `now`, render, send over one connection, record each.

The order per message is the guarantee: the claim is committed before SMTP sees anything, the
subscriber's status is re-read just before sending, and the outcome is committed right after
the server's reply (a crash in between can repeat only that one message, with its Message-ID).
"""

from __future__ import annotations

import logging
import random
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from campaign import schedule, store
from campaign.clock import Clock
from campaign.compose import Composer, Recipient
from campaign.db import Database
from campaign.errors import (
    PermanentFailure,
    RenderError,
    TemporaryFailure,
    TransportUnavailable,
)
from campaign.plan import Plan
from campaign.store import Claim
from campaign.subscriptions import email_hash
from campaign.transport import Connection, Transport

log = logging.getLogger(__name__)


class RelayThrottled(TemporaryFailure):
    """The mail server asks us to slow down (4.7.x): the whole relay backs off, not one email."""


def is_throttle(failure: TemporaryFailure) -> bool:
    return (failure.enhanced_code or "").startswith("4.7.")


@dataclass(frozen=True)
class SendPolicy:
    batch_size: int = 200
    lease_seconds: int = 300
    max_attempts: int = 5
    retry_base_seconds: int = 60
    rate_per_second: float = 0.0
    soft_bounce_limit: int = 3


@dataclass
class PassResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    released: int = 0
    error: str | None = None
    stopped: bool = False

    def summary(self) -> str:
        return (
            f"claimed={self.claimed} sent={self.sent} retried={self.retried} "
            f"failed={self.failed} bounced={self.bounced} skipped={self.skipped}"
        )


class Pacer:
    """Keeps sending under `rate` messages a second (0: no limit), sleeping on the clock."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_at: float | None = None

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock.monotonic()
        if self._next_at is not None and now < self._next_at:
            self._clock.sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self._interval


@dataclass
class Dispatcher:
    """Sends one plan's due steps. Built once by bootstrap; `run_pass` is called per tick."""

    db: Database
    plan: Plan
    composer: Composer
    transport: Transport
    clock: Clock
    owner: str
    policy: SendPolicy = field(default_factory=SendPolicy)
    #: after a throttle reply no pass sends before this instant (this process).
    relay_paused_until: datetime | None = None
    _throttles: int = 0

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
        if self.relay_paused_until is not None and now < self.relay_paused_until:
            result.error = f"relay throttled: backing off until {self.relay_paused_until:%H:%M:%S}"
            return result
        pacer = Pacer(self.policy.rate_per_second, self.clock)
        plan_steps = [(step.key, step.day) for step in self.plan.steps]
        with ExitStack() as stack:
            connection: Connection | None = None
            while True:
                with self.db.transaction() as session:
                    claims = store.claim_due(
                        session,
                        plan_id=self.plan.id,
                        steps=plan_steps,
                        now=now,
                        owner=self.owner,
                        lease_until=now + timedelta(seconds=self.policy.lease_seconds),
                        limit=self.policy.batch_size,
                        new_message_id=self.composer.new_message_id,
                        only_enrollment=only_enrollment,
                    )
                if not claims:
                    return result
                result.claimed += len(claims)
                for position, claim in enumerate(claims):
                    if stop is not None and stop.is_set():
                        self._release(claims[position:], result)
                        result.stopped = True
                        return result
                    try:
                        if connection is None:
                            connection = stack.enter_context(self.transport.open())
                        self._deliver(claim, connection, pacer, now, result)
                    except TransportUnavailable as exc:
                        # An operator problem, not the message's: give every claim back intact.
                        self._release(claims[position:], result)
                        result.error = exc.message
                        return result
                    except RelayThrottled as exc:
                        # Slow down as asked: every claim back, no attempt used, no sending
                        # until the backoff ends (doubling while the server keeps asking).
                        self._release(claims[position:], result)
                        self._throttles += 1
                        delay = schedule.retry_delay(
                            self._throttles, self.policy.retry_base_seconds, 1.0
                        )
                        self.relay_paused_until = now + delay
                        result.error = f"relay throttled ({exc.message}); backing off {delay}"
                        return result

    def _deliver(
        self,
        claim: Claim,
        connection: Connection,
        pacer: Pacer,
        now: datetime,
        result: PassResult,
    ) -> None:
        step = self.plan.step_by_key(claim.step_key)
        if step is None:  # the plan changed since the claim: look again next pass
            self._release([claim], result)
            return
        if self._too_late(claim, now):
            with self.db.transaction() as session:
                store.record_late_skip(
                    session, claim, now, f"more than {self.plan.skip_after} late (catch_up)",
                    self._next_due(claim, None),
                )  # fmt: skip
            result.skipped += 1
            return
        recipient = Recipient(claim.subscriber_id, claim.email, claim.first_name)
        try:
            composed = self.composer.compose(
                step, recipient, message_id=claim.message_id, now=now,
                delivery_id=claim.delivery_id,
            )  # fmt: skip
        except RenderError as exc:
            log.warning("render failed for delivery %s: %s", claim.delivery_id, exc.message)
            self._temporary(claim, now, exc.message, result)
            return
        except ValueError as exc:
            # Data no template can fix (an address stored malformed): fail this one, not the pass.
            log.warning("cannot build delivery %s: %s", claim.delivery_id, exc)
            with self.db.transaction() as session:
                store.record_failed(
                    session, claim, now, f"cannot build message: {exc}", self._next_due(claim, None)
                )
            result.failed += 1
            return
        with self.db.transaction() as session:
            still_active = store.subscriber_is_active(session, claim.subscriber_id)
            if not still_active:
                store.record_skipped(session, claim, now, "subscriber left before sending")
        if not still_active:
            result.skipped += 1
            return
        pacer.wait()
        try:
            connection.send(composed.envelope, composed.data)
        except TemporaryFailure as exc:
            if is_throttle(exc):
                raise RelayThrottled(
                    exc.message, smtp_code=exc.smtp_code, enhanced_code=exc.enhanced_code
                ) from exc
            self._temporary(claim, now, exc.message, result)
        except PermanentFailure as exc:
            with self.db.transaction() as session:
                if exc.bounce:
                    store.record_bounce(session, claim, now, exc.message, email_hash(claim.email))
                else:
                    store.record_failed(
                        session, claim, now, exc.message, self._next_due(claim, None)
                    )
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
        else:
            sent_at = self.clock.now()
            with self.db.transaction() as session:
                store.record_sent(session, claim, sent_at, self._next_due(claim, sent_at))
            result.sent += 1
            self._throttles = 0

    def record_heartbeat(
        self, started_at: datetime, now: datetime, seconds: float, paused: str | None = None
    ) -> None:
        """Say this engine finished a pass at `now`, and whether sending is paused and why
        (read by /healthz and /metrics, across instances)."""
        with self.db.transaction() as session:
            store.beat(session, self.owner, started_at, now, seconds, paused)

    def _temporary(self, claim: Claim, now: datetime, error: str, result: PassResult) -> None:
        attempts = claim.attempts + 1
        with self.db.transaction() as session:
            if attempts >= self.policy.max_attempts:
                # Give up on this step only: the subscriber stays active and the plan goes on,
                # unless this mailbox has now soft-bounced on SOFT_BOUNCE_LIMIT steps in a row.
                store.record_failed(session, claim, now, error, self._next_due(claim, None))
                result.failed += 1
                failures = store.consecutive_failures(session, claim.subscriber_id)
                if failures >= self.policy.soft_bounce_limit:
                    store.stop_mailing(
                        session, claim.subscriber_id, "bounced", email_hash(claim.email), now
                    )
                    log.warning(
                        "subscriber %s suppressed: %d steps in a row failed (last: %s)",
                        claim.subscriber_id, failures, error,
                    )  # fmt: skip
                return
            delay = schedule.retry_delay(
                attempts,
                self.policy.retry_base_seconds,
                random.uniform(0.5, 1.5),  # noqa: S311
            )
            store.record_retry(session, claim, now, error, now + delay)
        result.retried += 1

    def _too_late(self, claim: Claim, now: datetime) -> bool:
        """Under `catch_up: {skip_after: H}`, a daily step H hours past its time is not sent.

        The welcome email (day 0) always goes: it carries what the signup promised.
        """
        step = self.plan.step_by_key(claim.step_key)
        if step is None or self.plan.skip_after is None or step.day == 0:
            return False
        nominal = schedule.nominal_due(
            self.plan, step, claim.started_at, _zone_or_utc(claim.timezone)
        )
        return now - nominal > self.plan.skip_after

    def _next_due(self, claim: Claim, sent_at: datetime | None) -> datetime | None:
        """When the step after `claim` is due; None when the plan is finished."""
        following = next((s for s in self.plan.steps if s.day > claim.step_day), None)
        if following is None:
            return None
        tz = _zone_or_utc(claim.timezone)
        last_sent = sent_at or claim.last_sent_at
        return schedule.due_at(self.plan, following, claim.started_at, tz, last_sent)

    def _release(self, claims: list[Claim], result: PassResult) -> None:
        with self.db.transaction() as session:
            store.release(session, claims, self.clock.now())
        result.released += len(claims)


def _zone_or_utc(name: str) -> ZoneInfo:
    try:
        return schedule.zone(name)
    except ValueError:
        return schedule.zone(schedule.DEFAULT_TIMEZONE)
