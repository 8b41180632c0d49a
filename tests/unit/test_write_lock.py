"""The SQLite write lock: held, another process cannot take it; let go, it can; and a thread
that already holds it may take it again (a transaction inside a transaction)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from campaign.storage.locks import WriteLock

#: A second process that tries the lock without waiting: prints "taken" or "busy".
TRY_FROM_ELSEWHERE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
else:
    print("taken")
"""


def _from_another_process(lock: WriteLock) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY_FROM_ELSEWHERE, str(lock.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_while_held_another_process_cannot_take_it_and_after_it_can(tmp_path: Path) -> None:
    """The lock queues writers across processes, and is let go at the end of the block."""
    lock = WriteLock(tmp_path / "campaign.db")
    with lock.held():
        assert _from_another_process(lock) == "busy"
    assert _from_another_process(lock) == "taken"
    lock.close()


def test_a_thread_that_holds_it_may_take_it_again(tmp_path: Path) -> None:
    """Nested blocks in one thread go on (no deadlock), and the lock is held until the
    outer block ends."""
    lock = WriteLock(tmp_path / "campaign.db")
    with lock.held():
        with lock.held():
            pass
        assert _from_another_process(lock) == "busy"
    assert _from_another_process(lock) == "taken"
    lock.close()
