"""The claims one pass holds: claimed in batches as they come due, handed to its SMTP
connections one at a time, their leases kept alive while the pass works, and the ones lost to
another engine dropped unsent."""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from campaign.clock import Clock
from campaign.delivery import chaining, timing
from campaign.domain.plan_catalog import PlanCatalog
from campaign.errors import DatabaseError
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.store import Claim, LeaseTime

log = logging.getLogger("campaign.dispatch")


@dataclass(frozen=True)
class DueClaims:
    """Claims, for one pass's `owner`, batches of the steps due at `now` under the running
    plans (each enrollment's own plan)."""

    db: Database
    plans: PlanCatalog
    now: datetime
    owner: str
    leases: LeaseTime
    #: the batch size, decided anew for each batch (the pace may have changed meanwhile).
    limit: Callable[[], int]
    new_message_id: Callable[[], str]
    #: one subscriber's enrollment only (the welcome email sent the moment they confirm).
    only_enrollment: int | None = None
    #: lesson emails per person per local day across plans (applies when several plans run).
    max_per_day: int = 1

    def daily_cap(self) -> store.DailyCap | None:
        """The cap across plans; None unless plans run side by side (one plan's schedule, or
        a `then:` chain's plans one after the other, keep one a day by themselves)."""
        if not self.plans.side_by_side:
            return None
        return store.DailyCap(
            self.max_per_day,
            frozenset((p.id, s.key) for p in self.plans for s in p.steps if s.day == 0),
            {p.id: p.send_time for p in self.plans},
            {
                (p.id, s.key): (p.send_days_of(s), p.send_time_of(s))
                for p in self.plans
                for s in p.steps
            },
        )

    @property
    def variants(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Per plan id and step key, the subjects its test compares (steps that test none are
        left out)."""
        return {
            plan.id: {step.key: step.variant_names for step in plan.steps if step.variants}
            for plan in self.plans
        }

    def next_batch(self) -> list[Claim]:
        """The next batch of claims whose step is itself due at `now` (empty: none left).

        An enrollment's `next_due_at` was computed for the step that was next when it was
        written; after a plan edit removed or moved that step, the step now next may be due
        later. Such a claim goes back with its own time: sending it now would be early. So
        does a step found outside its send window (late after downtime, or a retry), with
        its next window's opening: released, never recorded as a delivery's outcome.
        """
        while True:
            with self.db.transaction() as session:
                claims = store.claim_due(
                    session,
                    plans={
                        plan.id: [(step.key, step.day) for step in plan.steps]
                        for plan in self.plans
                    },
                    now=self.now,
                    owner=self.owner,
                    lease_until=self.now + timedelta(seconds=self.leases.seconds),
                    limit=self.limit(),
                    new_message_id=self.new_message_id,
                    only_enrollment=self.only_enrollment,
                    lease=self.leases,
                    variants=self.variants,
                    cap=self.daily_cap(),
                    chain=functools.partial(chaining.chain_after, self.plans),
                )
            # After the claim's commit, not in it: SQLite's one writer (a signup, another
            # sender process) waits for that transaction, so it holds no per-claim work.
            # Outside its send window a due step waits too: for the subscriber's next window.
            early = [
                replace(claim, due_at=until)
                for claim in claims
                if (until := timing.held_until(self.plans.plans[claim.plan_id], claim, self.now))
                is not None
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


class Feed:
    """Hands claims to the connections one at a time, claiming the next batch in the
    background while the last part of the current one is sent.

    Any connection can halt the feed (the relay throttles, the server or the database is
    gone, or the process is stopping); what was claimed and not handed out is given back.
    A claim is held from its batch's claim until `finish`; `held` is what the lease keeper
    renews, and `lose` drops the ones another engine took over.
    """

    def __init__(self, claim_batch: Callable[[], list[Claim]], stop: threading.Event | None):
        self._claim_batch = claim_batch
        self.stop = stop
        self._lock = threading.Lock()
        self._pending: deque[Claim] = deque()
        self._in_flight: set[int] = set()  # enrollment ids handed out and not finished
        self._exhausted = False
        #: the next batch, being claimed while connections send (None: not started).
        self._claiming: _BatchClaim | None = None
        #: claiming the next batch starts when this few claims are left to hand out.
        self._refill_at = 0
        self.claimed = 0
        self.lost = 0
        self.stopped = False
        self.halted_by: BaseException | None = None

    def next(self) -> Claim | None:
        with self._lock:
            if self.halted_by is not None:
                return None
            if self.stop is not None and self.stop.is_set():
                self.stopped = True
                return None
            if not self._pending and not self._exhausted:
                if self._claiming is None:
                    self._take(self._claim_batch())
                else:
                    self._take_claiming()  # wait for it: nothing else is left to hand out
            if not self._pending:
                return None
            claim = self._pending.popleft()
            self._in_flight.add(claim.enrollment_id)
            # Claimed while the rest is sent: otherwise every connection waits for each
            # batch at its end (docs/performance.md).
            refill = len(self._pending) <= self._refill_at and not self._exhausted
            if refill and self._claiming is None:
                self._claiming = _BatchClaim(self._claim_batch)
            return claim

    def _take(self, batch: list[Claim]) -> None:
        self.claimed += len(batch)
        self._exhausted = not batch
        self._pending.extend(batch)
        self._refill_at = len(batch) // 2

    def _take_claiming(self) -> None:
        """Wait for the batch being claimed and add it (raising what claiming it raised)."""
        claiming, self._claiming = self._claiming, None
        if claiming is not None:
            self._take(claiming.result())

    def keeps(self, claim: Claim) -> bool:
        """Whether `claim`, handed out ahead of its turn, still goes: after a stop or a halt
        it is pending again, given back with the rest."""
        with self._lock:
            stopping = self.stop is not None and self.stop.is_set()
            if self.halted_by is None and not stopping:
                return True
            self.stopped = self.stopped or (stopping and self.halted_by is None)
            self._in_flight.discard(claim.enrollment_id)
            self._pending.appendleft(claim)
            return False

    def finish(self, claim: Claim) -> None:
        """The claim is settled, given back or lost: its lease needs no more renewing."""
        with self._lock:
            self._in_flight.discard(claim.enrollment_id)

    def held(self) -> set[int]:
        """The enrollments whose claims this pass holds (pending or in flight)."""
        with self._lock:
            return {claim.enrollment_id for claim in self._pending} | self._in_flight

    def lose(self, enrollment_ids: set[int]) -> None:
        """Another engine took these claims over: never hand out the pending ones."""
        with self._lock:
            kept = [c for c in self._pending if c.enrollment_id not in enrollment_ids]
            self.lost += len(self._pending) - len(kept)
            self._pending = deque(kept)

    def halt(self, reason: BaseException, unsent: Claim | None = None) -> None:
        with self._lock:
            if self.halted_by is None:
                self.halted_by = reason
            if unsent is not None:
                self._in_flight.discard(unsent.enrollment_id)
                self._pending.appendleft(unsent)

    def leftovers(self) -> list[Claim]:
        """What was claimed and never handed out, the batch being claimed included."""
        with self._lock:
            # The pass is ending: a failed claim is reported, not raised (its transaction,
            # rolled back, claimed nothing).
            try:
                self._take_claiming()
            except DatabaseError as exc:
                log.warning("cannot claim the next batch: %s", exc.message)
            except Exception:
                log.exception("claiming the next batch failed")
            left = list(self._pending)
            self._pending.clear()
            return left


class _BatchClaim:
    """One batch claimed on a thread of its own; `result` waits for it."""

    def __init__(self, claim_batch: Callable[[], list[Claim]]) -> None:
        self._claim_batch = claim_batch
        self._batch: list[Claim] = []
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="claim-batch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._batch = self._claim_batch()
        except Exception as exc:  # raised where the batch is taken, as a claim made there would
            self._error = exc

    def result(self) -> list[Claim]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._batch


class LeaseKeeper:
    """Renews the leases of a pass's claims every `period` seconds while the pass works.

    A process that was paused (SIGSTOP, a frozen VM) past its leases finds here, or at the
    proof before each message, that another engine took them over, and never sends them.
    """

    def __init__(
        self,
        db: Database,
        feed: Feed,
        owner: str,
        lease: LeaseTime,
        clock: Clock,
        period: float,
    ) -> None:
        self._db = db
        self._feed = feed
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._period = period
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        # Real seconds, not the injected clock: a lease is about this process being alive.
        while not self._done.wait(self._period):
            self.renew()

    def renew(self) -> None:
        held = self._feed.held()
        if not held:
            return
        until = self._clock.now() + timedelta(seconds=self._lease.seconds)
        try:
            with self._db.transaction(flush_to_disk=False) as session:
                still = store.renew_leases(session, held, self._owner, self._lease, until)
        except DatabaseError as exc:  # the proof before each message will say what to do
            log.warning("cannot renew leases: %s", exc.message)
            return
        if held - still:
            self._feed.lose(held - still)
