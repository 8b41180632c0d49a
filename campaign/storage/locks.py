"""SQLite's two file locks, each a kernel `flock` on a file beside the database file.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

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

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


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
