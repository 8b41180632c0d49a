"""The long-running service: a pass every TICK_SECONDS with APScheduler, and a graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from campaign.clock import Clock
from campaign.delivery.dispatch import Dispatcher
from campaign.delivery.passes import PassResult
from campaign.delivery.senders import SenderPool
from campaign.errors import CampaignError, DatabaseError, DatabaseRefusesWrites

log = logging.getLogger("campaign.scheduler")

#: after losing the database, try the pass again after these pauses (seconds) before the tick.
DATABASE_RETRIES = (1.0, 2.0, 4.0, 8.0)


class Service:
    """Runs sending passes until stopped; a pass never overlaps the previous one."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        clock: Clock,
        tick_seconds: float,
        *,
        housekeeping: Callable[[datetime], None] = lambda now: None,
        on_pass: Callable[[PassResult, float], None] = lambda result, seconds: None,
        on_pause: Callable[[str | None], None] = lambda reason: None,
        on_pass_failure: Callable[[str | None], None] = lambda reason: None,
        senders: SenderPool | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        #: sender processes that share each pass (SENDER_PROCESSES), if more than this one.
        self.senders = senders
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.started_at = clock.now()
        self._housekeeping = housekeeping
        self._on_pass = on_pass
        self._on_pause = on_pause
        self._on_pass_failure = on_pass_failure
        self.stop_requested = threading.Event()
        #: why sending is paused in this process (None while it runs): the mail server, or a
        #: database that is gone or refuses writes (no heartbeat can say so then).
        self.paused_reason: str | None = None
        self._paused_by: str | None = None  # what the pause is about: one log line for each
        #: why the last pass ended in an unexpected error (a bug), None after one that did not.
        self.pass_failure: str | None = None

    def run_pass(self, now: datetime | None = None) -> PassResult:
        """One pass at `now` (read from the clock once, when not given); one log line.

        A database that went away (a restart) gets the pass retried a few times on new
        connections before sending pauses until the next tick. One that refuses writes
        (read-only after a failover, full, locked) gets one more try at once, on new
        connections (the pooled ones may lead to the old node), then sending pauses. While
        it is paused for the database, each tick tries once and waits for nothing.
        """
        paused_for_database = self._paused_by in ("database", "refuses writes")
        retries = iter(() if paused_for_database else DATABASE_RETRIES)
        tried_new_connections = False
        while True:
            try:
                return self._pass(now or self.clock.now())
            except DatabaseRefusesWrites as exc:
                log.debug("pass failed: %s (%s)", exc.message, exc.detail)
                if tried_new_connections or self.stop_requested.is_set():
                    self._pause(exc.message, "refuses writes")
                    return PassResult(error=exc.message)
                tried_new_connections = True  # the pool was just discarded: a failover?
            except DatabaseError as exc:
                pause = next(retries, None)
                if pause is None or self.stop_requested.is_set():
                    self._pause(exc.message, "database")
                    return PassResult(error=exc.message)
                log.warning("pass failed: %s; retrying in %.0fs", exc.message, pause)
                self.stop_requested.wait(pause)
            except CampaignError as exc:
                log.error("pass failed: %s", exc.message)
                return PassResult(error=exc.message)
            except Exception as exc:
                return self._failed(exc)

    def _failed(self, exc: Exception) -> PassResult:
        """A pass ended by an unexpected error: its traceback logged once (not every tick),
        /healthz degraded and `campaign_pass_errors_total` counting until a pass succeeds."""
        reason = f"the last pass failed: {type(exc).__name__}"
        if reason != self.pass_failure:
            log.exception("pass failed: %s: %s", type(exc).__name__, exc)
        else:
            log.debug("pass failed again: %s: %s", type(exc).__name__, exc)
        self.pass_failure = reason
        self._on_pass_failure(reason)
        return PassResult(error=reason)

    def _pass(self, now: datetime) -> PassResult:
        started = time.perf_counter()
        self._housekeeping(now)
        runner = self.senders or self.dispatcher
        result = runner.run_pass(now, self.stop_requested)
        if isinstance(result.halted_by, DatabaseError):
            raise result.halted_by
        elapsed = time.perf_counter() - started
        self.dispatcher.record_heartbeat(self.started_at, now, elapsed, result.error)
        self._on_pass(result, elapsed)
        if self.pass_failure is not None:
            log.info("passes succeed again")
            self.pass_failure = None
            self._on_pass_failure(None)
        if result.error:
            self._pause(result.error, result.error)
        elif self.paused_reason is not None:
            log.info("sending resumed")
            self.paused_reason = self._paused_by = None
            self._on_pause(None)
        log.info("pass at=%s %s elapsed=%.3fs", now.isoformat(), result.summary(), elapsed)
        return result

    def _pause(self, reason: str, about: str) -> None:
        """One clear line per new problem, not one per message or per tick."""
        if about != self._paused_by:
            log.error("sending paused: %s", reason)
        else:
            log.debug("sending still paused: %s", reason)
        self.paused_reason, self._paused_by = reason, about
        self._on_pause(reason)

    def open(self) -> None:
        """Start the sender processes, if any (from the main thread: they end with it)."""
        if self.senders is not None:
            self.senders.open()

    def close(self) -> None:
        """Let the sender processes finish the message in flight and exit."""
        if self.senders is not None:
            self.senders.close()

    def __enter__(self) -> Service:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run_once(self, now: datetime | None = None) -> PassResult:
        """Drain everything due at `now` and return (for cron and tests)."""
        return self.run_pass(now)

    def run_forever(self) -> None:
        """Tick every TICK_SECONDS until SIGTERM or Ctrl-C; then finish the message in flight."""
        self._install_signal_handlers()
        self.open()
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.add_job(
            self.run_pass,
            IntervalTrigger(seconds=self.tick_seconds),
            id="sending-pass",
            max_instances=1,  # a slow pass is never joined by a second one
            coalesce=True,  # missed ticks collapse into one
            misfire_grace_time=None,
            next_run_time=self.clock.now(),
        )
        log.info(
            "scheduler started: plans=%s tick=%ss sending via %s in %d process(es)",
            ",".join(content.plan.id for content in self.dispatcher.contents()),
            self.tick_seconds,
            self.dispatcher.transport.description,
            self.senders.processes if self.senders else 1,
        )
        scheduler.start()
        try:
            self.stop_requested.wait()
        finally:
            log.info("stopping: finishing the message in flight")
            scheduler.shutdown(wait=True)
            self.close()
            log.info("stopped")

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            if self.stop_requested.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                raise SystemExit(1)
            log.info("received %s", signal.Signals(signum).name)
            self.stop_requested.set()
            if self.senders is not None:
                self.senders.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
