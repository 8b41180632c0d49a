"""Sender processes: a pass shared by SENDER_PROCESSES processes, so sending uses more cores.

One process runs Python on one core at a time, however many SMTP connections it has. Each
sender process is a whole engine of its own (database connections, plan, SMTP connections)
that claims its share of a pass as separate instances do: the database decides who sends
what, so the guarantee is the same as for any number of schedulers on one database. The
scheduler process sends too, and tells the others when to pass and when to stop.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from campaign.delivery.dispatch import Dispatcher
from campaign.delivery.passes import PassResult
from campaign.errors import CampaignError, DatabaseError

log = logging.getLogger("campaign.senders")

#: One pass of a sender process at `now`, stopping early once the event is set.
PassRunner = Callable[[datetime, threading.Event], PassResult]
#: Builds a sender process's engine, in that process (a picklable top-level function).
RunnerFactory = Callable[[], PassRunner]

#: how long a new sender process may take to build its engine (import, plan, templates).
_START_SECONDS = 120.0
#: how long `close` waits for a sender to finish the message in flight and exit.
_EXIT_SECONDS = 10.0


def connection_shares(connections: int, processes: int) -> list[int]:
    """SMTP connections per process, as even as they go; never a process without one."""
    processes = max(1, min(processes, connections))
    return [connections // processes + (n < connections % processes) for n in range(processes)]


class SenderPool:
    """The scheduler's own dispatcher, and a sender process per factory."""

    def __init__(self, local: Dispatcher, factories: list[RunnerFactory]) -> None:
        self.local = local
        self._factories = factories
        self._senders: list[_Sender | None] = [None] * len(factories)
        self._lock = threading.Lock()

    @property
    def processes(self) -> int:
        return 1 + len(self._factories)

    def pids(self) -> list[int]:
        """The sender processes' ids (for `ps`, and for benchmarks that add up their CPU)."""
        return [sender.process.pid for sender in self._senders if sender is not None]

    def open(self) -> None:
        """Start every sender process that is not running (at start, or after one died)."""
        with self._lock:
            starting = []
            for n, factory in enumerate(self._factories):
                sender = self._senders[n]
                if sender is not None and sender.alive():
                    continue
                if sender is not None:
                    log.error(
                        "sender process %d ended (exit code %s); starting it again",
                        sender.number,
                        sender.process.exitcode,
                    )
                    sender.close()
                self._senders[n] = None
                starting.append((n, _Sender.start(factory, n + 1)))
            try:
                for n, sender in starting:  # they build their engines at the same time
                    sender.wait_ready()
                    self._senders[n] = sender
            except CampaignError:
                for n, sender in starting:
                    sender.close()
                    self._senders[n] = None
                raise

    def run_pass(self, now: datetime, stop: threading.Event) -> PassResult:
        """One pass at `now` in every process at once; their results added up."""
        self.open()
        senders = [sender for sender in self._senders if sender is not None]
        asked = [sender for sender in senders if sender.ask(now)]
        try:
            result = self.local.run_pass(now, stop)
        finally:  # every answer is read, so that the next pass does not read this one's
            answers = [sender.answer() for sender in asked]
        for answer in answers:
            result.add_pass(answer)
        for sender in senders:
            if sender not in asked:
                result.error = result.error or f"sender process {sender.number} is not running"
        return result

    def stop(self) -> None:
        """Ask every sender to finish the message in flight and give back its claims."""
        for sender in self._senders:
            if sender is not None:
                sender.interrupt()

    def close(self) -> None:
        with self._lock:
            for sender in self._senders:
                if sender is not None:
                    sender.close()
            self._senders = [None] * len(self._factories)


@dataclass
class _Sender:
    """One sender process and the pipe the scheduler talks to it through."""

    number: int
    process: Any  # multiprocessing's SpawnProcess
    pipe: Connection

    @classmethod
    def start(cls, factory: RunnerFactory, number: int) -> _Sender:
        # spawn, not fork: the scheduler runs threads (APScheduler, the web server).
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(theirs, factory, os.getpid()),
            daemon=True,
            name=f"campaign-sender-{number}",
        )
        process.start()
        theirs.close()
        return cls(number, process, ours)

    def wait_ready(self) -> None:
        """Until the process has built its engine; CampaignError if it cannot."""
        kind, detail = "silent", f"no answer in {_START_SECONDS:.0f}s"
        if self.pipe.poll(_START_SECONDS):
            try:
                kind, detail = self.pipe.recv()
            except EOFError:
                kind, detail = "ended", ""
            if kind == "ready":
                return
        self.process.kill()
        self.process.join()
        if kind == "ended":
            detail = f"it ended with exit code {self.process.exitcode}"
        raise CampaignError(f"sender process {self.number} could not start: {detail}")

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def ask(self, now: datetime) -> bool:
        try:
            self.pipe.send(("pass", now.isoformat()))
        except OSError:
            return False
        return True

    def answer(self) -> PassResult:
        try:
            kind, result = self.pipe.recv()
        except (EOFError, OSError):
            return PassResult(error=f"sender process {self.number} ended during a pass")
        if kind != "result" or not isinstance(result, PassResult):
            return PassResult(error=f"sender process {self.number} answered {kind!r}")
        return result

    def interrupt(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGTERM)

    def close(self) -> None:
        with suppress(OSError):
            self.pipe.send(("exit", None))
        self.process.join(_EXIT_SECONDS)
        if self.process.is_alive():
            log.error(
                "sender process %d did not exit in %.0fs; killing it", self.number, _EXIT_SECONDS
            )
            self.process.kill()
            self.process.join()
        self.pipe.close()


def _serve(pipe: Connection, factory: RunnerFactory, parent: int) -> None:
    """A sender process: build the engine, then run a pass whenever the scheduler says."""
    _end_with(parent)
    # Ctrl-C reaches the whole process group; the scheduler decides, and says SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        run = factory()
    except Exception as exc:  # anything at all: the scheduler reports it and does not start
        pipe.send(("failed", getattr(exc, "message", None) or repr(exc)))
        return
    pipe.send(("ready", os.getpid()))
    while True:
        try:
            kind, detail = pipe.recv()
        except EOFError:
            return
        if kind != "pass":
            return
        try:
            result = run(datetime.fromisoformat(detail), stop)
        except Exception as exc:  # a bug in one pass must not end the process silently
            log.exception("sender process pass failed")
            result = PassResult(error=f"sender process {os.getpid()} failed: {exc!r}")
        # What ended the pass crosses the pipe only as the error text, but for a lost
        # database: the scheduler retries the whole pass for that.
        if not isinstance(result.halted_by, DatabaseError):
            result.halted_by = None
        pipe.send(("result", result))


def _end_with(parent: int) -> None:
    """A crash of the scheduler is a crash of its senders: end when the parent ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the line above took effect
        os._exit(1)

    def watch() -> None:  # elsewhere, and should the kernel not say: look every second
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
