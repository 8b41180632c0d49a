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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from campaign.clock import Clock, SystemClock
from campaign.content.compose import Composed, Recipient
from campaign.content.snapshot import Contents
from campaign.delivery import outcomes, timing
from campaign.delivery.backoff import RelayBackoff
from campaign.delivery.feed import DueClaims, Feed, LeaseKeeper
from campaign.delivery.outcomes import Outcomes
from campaign.delivery.pacing import SendBudget, StopWaiting, buckets_for
from campaign.delivery.passes import PassResult, SendPolicy, is_throttle
from campaign.domain.subscriber_fields import decode as stored_fields
from campaign.domain.transport import Connection, GroupingConnection, Transport
from campaign.errors import (
    DatabaseError,
    PermanentFailure,
    RelayThrottled,
    RenderError,
    TemporaryFailure,
    TransportUnavailable,
    UnknownOutcome,
    UnsendableAddress,
)
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.store import Claim, LeaseTime

log = logging.getLogger("campaign.dispatch")

#: A proof older than this when the message's content is due is taken again. Normally the
#: content follows its proof within a round trip and the next message's preparation.
PROOF_FRESH_SECONDS = 1.0


@dataclass
class Dispatcher:
    """Sends the running plans' due steps. Built once by the engine; `run_pass` is called per
    tick. Each claim is rendered and timed by its own enrollment's plan (`claim.plan_id`).

    A pass is composed of the claims feed (`feed`), the recorded outcomes (`outcomes`), the
    relay's back-off (`backoff`) and pure timing (`timing`); this class runs the SMTP
    connections and decides, per message, which outcome it came to.
    """

    db: Database
    #: the plans and their composers as they are now (the engine's current contents): read
    #: once per pass, which uses that one value throughout, whatever a reload swaps in.
    contents: Callable[[], Contents]
    transport: Transport
    clock: Clock
    owner: str
    policy: SendPolicy = field(default_factory=SendPolicy)
    #: the clock leases are measured by; None: the database's own (store.leases).
    lease_clock: Clock | None = None
    #: how long claims are held, and by which clock.
    leases: LeaseTime = field(init=False)
    #: after a throttle reply, no pass of this process sends until it ends.
    backoff: RelayBackoff = field(init=False)
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
        self.backoff = RelayBackoff(self.policy.retry_base_seconds)
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
        refusal = self.backoff.refusal(now)
        if refusal is not None:
            result.error = refusal
            return result
        # One set of plans, composers and transport for the whole pass, even if they are
        # swapped meanwhile; the claims of this pass are this token's, not an earlier pass's.
        contents = self.contents()
        transport = self.transport
        composer = contents.default.composer
        token = f"{self.owner}/{next(self._passes)}"
        # The welcome email of one subscriber needs one connection, not a pool.
        workers = 1 if only_enrollment is not None else self.policy.connections
        claims = DueClaims(
            self.db,
            contents.catalog,
            now,
            token,
            self.leases,
            partial(self._claim_limit, workers),
            composer.new_message_id,
            only_enrollment,
            self.policy.max_per_day,
        )
        feed = Feed(claims.next_batch, stop)
        work = _Pass(now, contents, transport, feed)
        results = [PassResult() for _ in range(workers)]
        renew_every = min(self.policy.lease_seconds / 3, 30.0)
        try:
            with LeaseKeeper(self.db, feed, token, self.leases, self.clock, renew_every):
                if workers == 1:
                    self._work(work, results[0])
                else:
                    with ThreadPoolExecutor(workers, thread_name_prefix="smtp") as pool:
                        futures = [pool.submit(self._work, work, part) for part in results]
                    for future in futures:
                        future.result()  # an unexpected error in a connection ends the pass
        except Exception:
            # A bug ended the pass: claims never handed to SMTP go back for the next pass at
            # once; the one in flight waits out its lease (it may have been sent).
            unsent = feed.leftovers()
            if unsent:
                outcomes.release(self.db, unsent, result, self._real)
            raise
        for part in results:
            result.add(part)
        leftovers = feed.leftovers()  # first: it waits for a batch still being claimed
        result.claimed = feed.claimed
        result.lost += feed.lost
        result.stopped = feed.stopped or isinstance(feed.halted_by, StopWaiting)
        if leftovers:
            outcomes.release(self.db, leftovers, result, self._real)
        result.halted_by = feed.halted_by
        self._after_halt(feed.halted_by, now, result)
        if result.lost:
            log.warning(
                "lost %d claim(s): this engine was paused, slow or cut off for longer than "
                "LEASE_SECONDS and another took them over; it did not send them",
                result.lost,
            )
        return result

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

    def _work(self, work: _Pass, result: PassResult) -> None:
        """One SMTP connection: deliver claims from the feed until it runs dry or halts."""
        feed = work.feed
        with ExitStack() as stack:
            recorder = stack.enter_context(store.DeliveryRecorder(self.db))
            recorded = Outcomes(
                self.db,
                recorder,
                work.contents.catalog,
                self.policy,
                self.leases,
                feed,
                result,
                self._real,
            )
            # The SMTP connection: closed and replaced after an unexpected error mid-message.
            session = stack.enter_context(ExitStack())
            connection: Connection | None = None
            # The same connection when it can group messages (asked once: a protocol check).
            grouping: GroupingConnection | None = None
            # Cleared to send and not sent yet; its envelope may already be open on the
            # connection (written with the previous message's end).
            ready: _Ready | None = None
            # The message after those, built while the server reads one (not proved yet).
            ahead = _Ahead(partial(self._next_built, work, recorded))
            while True:
                following: _Ready | None = None
                try:
                    ready = ready or self._next_ready(work, recorded, ahead)
                    if ready is None:
                        break
                    if self._groups(grouping):
                        # Proved (and the previous 250 recorded) before its MAIL is written.
                        following = self._next_ready(work, recorded, ahead)
                    if following is None:
                        # The previous 250 is recorded before this message's content goes.
                        recorded.record_last_sent()
                    if not self._still_clear(work, ready, recorded):
                        # Its envelope may be open: only a new session forgets it unsent.
                        session.close()
                        connection, grouping, ready = None, None, following
                        continue
                    if connection is None:
                        connection = session.enter_context(work.transport.open())
                        if isinstance(connection, GroupingConnection):
                            grouping = connection
                    self._deliver(work, ready, connection, grouping, recorded, following, ahead)
                except _SessionSpoiled:
                    session.close()
                    connection, grouping = None, None
                except (TransportUnavailable, RelayThrottled, DatabaseError, StopWaiting) as exc:
                    # Not this message's fault: it goes back unsent, and so does the rest.
                    _halt(feed, exc, ready, following, ahead.built)
                    break
                except Exception as exc:
                    _halt(feed, exc, following, ahead.built)
                    recorded.record_last_sent()
                    raise
                except BaseException as exc:  # the process is dying: like a kill, record nothing
                    feed.halt(exc)
                    raise
                ready = following
            recorded.record_last_sent()

    def _groups(self, connection: GroupingConnection | None) -> bool:
        """Whether the next message is prepared now, to go with this one's end. Not under a
        rate limit: a wait for its turn would hold the server mid-transaction."""
        return connection is not None and connection.groups() and self._budget.rate <= 0

    def _still_clear(self, work: _Pass, ready: _Ready, recorded: Outcomes) -> bool:
        """Prove `ready` again if its proof is no longer fresh: the process was paused, or
        preparing the message after it was slow (a new batch, a database that hesitated)."""
        if self._real.monotonic() - ready.proved_at <= PROOF_FRESH_SECONDS:
            return True
        if not recorded.cleared_to_send(ready.claim, work.now):
            return False
        ready.proved_at = self._real.monotonic()
        return True

    def _next_ready(self, work: _Pass, recorded: Outcomes, ahead: _Ahead) -> _Ready | None:
        """The next claim built and cleared to send (None: the feed ran dry or halted): the
        one built `ahead` if any, then the feed's. Claims that cannot go (a changed plan, too
        late, a render error, a subscriber who left, a lost lease) are settled on the way."""
        built = ahead.take()
        while True:
            if built is not None and work.feed.keeps(built.claim):
                ready = self._prove(work, built, recorded)
                if ready is not None:
                    return ready
            built = self._next_built(work, recorded)
            if built is None:
                return None

    def _next_built(self, work: _Pass, recorded: Outcomes) -> _Built | None:
        """The feed's next claim whose message could be built (None: the feed ran dry)."""
        while True:
            claim = work.feed.next()
            if claim is None:
                return None
            built = self._build(work, claim, recorded)
            if built is not None:
                return built

    def _after_halt(self, reason: BaseException | None, now: datetime, result: PassResult) -> None:
        if isinstance(reason, TransportUnavailable | DatabaseError):
            result.error = reason.message
        elif isinstance(reason, RelayThrottled):
            # Slow down as asked: no attempt used, no sending until the back-off ends.
            result.error = self.backoff.throttled(reason, now)

    def _build(self, work: _Pass, claim: Claim, recorded: Outcomes) -> _Built | None:
        """Build `claim`'s message (None: the claim was settled or given back)."""
        now = work.now
        content = work.contents.of(claim.plan_id)
        step = None if content is None else content.plan.step_by_key(claim.step_key)
        if content is None or step is None:  # the plan changed since the claim: look again
            recorded.release([claim])
            return None
        # The subject the delivery recorded when it was created: a retry sends the same one.
        step = step.with_variant(claim.variant)
        if timing.too_late(content.plan, claim, now):
            recorded.late(claim, now)
            return None
        recipient = Recipient(
            claim.subscriber_id, claim.email, claim.first_name, stored_fields(claim.fields)
        )
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
            recorded.temporary(claim, now, exc.message)
            return None
        except (UnsendableAddress, ValueError) as exc:
            # Data no template can fix (an address no envelope can carry, a name no header
            # can): fail this one for good, not the pass; the subscriber is not bounced.
            reason = exc.message if isinstance(exc, UnsendableAddress) else str(exc)
            recorded.failed(claim, now, f"cannot build message: {reason}")
            return None
        except Exception as exc:
            # A fault of ours met by this subscriber's data: their retry, not the pass's end.
            log.warning("cannot build delivery %s", claim.delivery_id, exc_info=True)
            recorded.temporary(claim, now, f"cannot build message: {_described(exc)}")
            return None
        return _Built(claim, composed)

    def _prove(self, work: _Pass, built: _Built, recorded: Outcomes) -> _Ready | None:
        """Prove `built`'s claim is still this pass's, its subscriber still active, and wait
        its turn under a rate limit (None: settled or lost)."""
        now, claim = work.now, built.claim
        try:
            # One transaction records the previous message's 250, proves this claim is still
            # ours and re-reads the subscriber's status: the last moment before its MAIL.
            if not recorded.cleared_to_send(claim, now):
                return None
            # After a long wait for our turn under a rate limit, prove it all again.
            waited = self._budget.acquire(work.feed.stop)
            if waited > 1.0 and not recorded.cleared_to_send(claim, now):
                return None
        except (DatabaseError, StopWaiting) as exc:
            work.feed.halt(exc, unsent=claim)  # never sent: it goes back with the rest
            raise
        return _Ready(claim, built.composed, self._real.monotonic())

    def _deliver(
        self,
        work: _Pass,
        ready: _Ready,
        connection: Connection,
        grouping: GroupingConnection | None,
        recorded: Outcomes,
        following: _Ready | None,
        ahead: _Ahead,
    ) -> None:
        """Send `ready`'s message and record what came of it; on a connection that groups,
        `following`'s envelope goes with its end, and the message after it is built `ahead`
        while the server reads this one."""
        now, claim, composed = work.now, ready.claim, ready.composed
        started = self._real.monotonic()
        try:
            if grouping is not None:
                then = None
                if following is not None:
                    then = (following.composed.envelope, len(following.composed.data))
                grouping.send(composed.envelope, composed.data, then, ahead)
            else:
                connection.send(composed.envelope, composed.data)
        except UnknownOutcome as exc:
            recorded.unknown(claim, now, exc.message)
        except TemporaryFailure as exc:
            if is_throttle(exc):
                raise RelayThrottled(
                    exc.message, smtp_code=exc.smtp_code, enhanced_code=exc.enhanced_code
                ) from exc
            recorded.temporary(claim, now, exc.message)
        except (TransportUnavailable, DatabaseError, StopWaiting):
            raise  # about every message, not this one: _work hands the rest back
        except PermanentFailure as exc:
            recorded.rejected(claim, now, exc)
        except Exception as exc:
            # Not a reply but a fault of ours sending this message: retried like a 4xx. The
            # session may be stuck mid-transaction, so the next message gets a new one.
            log.warning(
                "delivery %s: unexpected error while sending", claim.delivery_id, exc_info=True
            )
            error = f"unexpected error while sending: {_described(exc)}"
            recorded.temporary(claim, now, error)
            raise _SessionSpoiled from exc
        else:
            self._note_pace(self._real.monotonic() - started)
            # Committed with the next message's proof (or when this connection ends), and
            # always before the next message's content is written.
            recorded.accepted(claim, self.clock.now())
            self.backoff.relieved()

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


@dataclass(frozen=True)
class _Pass:
    """What one pass works with, read once at its start."""

    now: datetime
    contents: Contents
    transport: Transport
    feed: Feed


@dataclass(frozen=True)
class _Built:
    """A claim whose message is built; not proved yet."""

    claim: Claim
    composed: Composed


class _Ahead:
    """The next message, built while the server reads the one before it: SMTP's `meanwhile`.

    Holds one built message at most; its claim is handed out by the feed and not proved. An
    error while building is kept and raised by `take`, where building would have raised it.
    """

    def __init__(self, build: Callable[[], _Built | None]) -> None:
        self._build = build
        self.built: _Built | None = None
        self._error: Exception | None = None

    def __call__(self) -> None:
        if self.built is not None or self._error is not None:
            return  # the one built before is not sent yet
        try:
            self.built = self._build()
        except Exception as exc:  # raised again by take(), where building would raise it
            self._error = exc

    def take(self) -> _Built | None:
        """The message built ahead (None: none), once; or the error building it met."""
        built, error, self.built, self._error = self.built, self._error, None, None
        if error is not None:
            raise error
        return built


@dataclass
class _Ready:
    """A claim whose message is built and whose claim was proved: it may go to SMTP."""

    claim: Claim
    composed: Composed
    #: when it was proved (the real clock's monotonic seconds).
    proved_at: float


def _halt(feed: Feed, reason: BaseException, *unsent: _Ready | _Built | None) -> None:
    """Halt the pass; `unsent` messages (built or cleared, never sent) go back first, in
    order."""
    feed.halt(reason)
    for message in reversed(unsent):
        if message is not None:
            feed.halt(reason, unsent=message.claim)


class _SessionSpoiled(Exception):
    """An unexpected error mid-message: the SMTP session's state is unknown."""


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
