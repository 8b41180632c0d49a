"""SQLite's two file locks, each a kernel `flock` on a file beside the database file, and the
group commit of the per-email records behind the first.

`WriteLock` (`<db>.write.lock`) queues the engine's writers: SQLite lets one writer in at a
time, and a writer that finds the database locked sleeps (1 ms, then 2, 5, 10...) before it
tries again, so two sender processes committing quickly collided and waited. Every write
transaction of the engine's own processes and threads takes this lock first instead, before
BEGIN IMMEDIATE: the kernel wakes the next one as the lock is let go. Read-only transactions
do not take it (`Database.read`). `SenderLock` (`<db>.sender.lock`) allows one sending process
per database: two schedulers on one file would only queue behind each other, so the second
one stops at once and says who holds the first.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any

from campaign.errors import AnotherSender


class WriteLock:
    """One per database file and process; reentrant within a thread."""

    def __init__(self, database_file: Path) -> None:
        self.path = database_file.with_name(database_file.name + ".write.lock")
        self._fd: int | None = None
        self._threads = threading.Lock()  # flock is per open file: threads queue here
        self._held = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (a nested block in the same thread just goes on)."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with self._threads:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)

    def held_here(self) -> bool:
        """Whether this thread holds the lock (inside `held`)."""
        return bool(getattr(self._held, "depth", 0))

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class QueuedWrite:
    """One thread's write, waiting in `CombinedWrites` to be run, maybe by another thread."""

    __slots__ = ("_wake", "done", "error", "result", "work")

    def __init__(self, work: Any) -> None:
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        # Held from the start: `sleep` blocks until another thread calls `wake`, once.
        self._wake = threading.Lock()
        self._wake.acquire()

    def succeed(self, result: Any) -> None:
        self.result, self.error, self.done = result, None, True

    def fail(self, error: BaseException) -> None:
        self.result, self.error, self.done = None, error, True

    def outcome(self) -> Any:
        """The result, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.result

    def sleep(self) -> None:
        """Wait until woken: the write is settled, or its thread is to run the next batch."""
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()


#: runs a batch, settling each write in it; before its commit it calls the second argument,
#: which appends to the batch the writes queued meanwhile (the batch runs those too).
RunBatch = Callable[[list[QueuedWrite], Callable[[], None]], None]


class CombinedWrites:
    """Short writes of many threads, committed together (group commit): a thread whose write
    finds no batch running runs it at once; writes queued meanwhile join that batch before its
    commit, or if they come too late, the first of them runs the next batch with every write
    queued by then, under the WriteLock. Each thread returns only once its write is committed
    or failed.

    Why: every SQLite call gives up Python's interpreter lock and must wait for it back behind
    the other threads, and so does each hand-over of the write lock. With 32 SMTP connections
    each taking the lock for its own record of a 250, a record took 5-16 ms; batched, the
    lock changes hands once per batch, and the engine sent a tenth more (docs/performance.md
    §17). Each waiting thread is woken once, by a lock of its own: when its write is settled,
    or when its turn to run the next batch comes. (A condition's notify_all woke every waiting
    thread at each batch's end, most of them to find they must wait on, each wake-up a wait
    for the interpreter lock among 32 threads.)
    """

    #: the writes one batch may take in: its commit (and its first writer) waits no longer.
    JOINED_AT_MOST = 64

    def __init__(self, lock: WriteLock) -> None:
        self._lock = lock
        self._mutex = threading.Lock()
        self._waiting: list[QueuedWrite] = []
        #: a batch runs, or its runner was chosen and is waking up.
        self._running = False

    @property
    def running(self) -> bool:
        """Whether a batch is being run (or waits for the lock)."""
        with self._mutex:
            return self._running

    @property
    def waiting(self) -> int:
        """Writes queued for the next batch."""
        with self._mutex:
            return len(self._waiting)

    def run(self, work: Any, run_batch: RunBatch) -> Any:
        """Queue `work` and wait until it is settled, running a batch (through `run_batch`,
        which settles each write in it) when none runs or this write's turn comes; `work`'s
        result, or its error raised."""
        mine = QueuedWrite(work)
        if self._lock.held_here():
            # Inside this thread's own write: waiting for another batch, which needs the
            # lock this thread holds, would never end. Its write runs alone, now.
            run_batch([mine], lambda: None)
            return mine.outcome()
        with self._mutex:
            if self._running:
                self._waiting.append(mine)
                batch = None
            else:
                self._running = True
                batch = [mine]
        if batch is None:
            mine.sleep()
            if mine.done:
                return mine.outcome()
            with self._mutex:  # this thread's turn: it runs all that waits, itself first
                batch, self._waiting = self._waiting, []
        try:
            with self._lock.held():
                run_batch(batch, partial(self._join, batch))
        finally:
            self._end(batch, mine)
        return mine.outcome()

    def _join(self, batch: list[QueuedWrite]) -> None:
        """Move the writes queued since `batch` began into it (up to JOINED_AT_MOST in all):
        called by the batch before its commit, so that they need not wait for the next."""
        with self._mutex:
            room = self.JOINED_AT_MOST - len(batch)
            if room > 0 and self._waiting:
                batch += self._waiting[:room]
                del self._waiting[:room]

    def _end(self, batch: list[QueuedWrite], mine: QueuedWrite) -> None:
        """Wake the writers whose writes are settled, and the next runner if any waits."""
        with self._mutex:
            # Unsettled only if run_batch raised (no connection to be had, or this thread
            # torn down): the others' writes go to the next batch.
            left = [queued for queued in batch if not queued.done and queued is not mine]
            self._waiting[:0] = left
            following = self._waiting[0] if self._waiting else None
            self._running = following is not None
        for queued in batch:
            if queued.done and queued is not mine:
                queued.wake()
        if following is not None:
            following.wake()


class SenderLock:
    """One per sending process: taken without waiting, or AnotherSender naming the holder."""

    def __init__(self, database_file: Path) -> None:
        self.path = database_file.with_name(database_file.name + ".sender.lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise AnotherSender(self.path, holder) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
