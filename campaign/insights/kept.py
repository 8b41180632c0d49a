"""Numbers too costly to count while a page waits, counted in a thread of their own and kept.

The console's Plan page (per-step numbers over the whole delivery log) and its Today page
(a day's sends and dues by hour) each take about a second at a million subscribers, more than a
page may. A `Kept` gives a page the last count at once, with the instant it was counted, and
once that count is `ttl` old one recount starts in a background thread (the page shows the
older count meanwhile). With nothing kept yet, the page waits for the first count at most
`patience` seconds, then says the numbers are being counted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")

#: How long a count is shown again before it is recounted.
TTL = timedelta(seconds=60)
#: How long a page waits for a running count before showing what it has.
PATIENCE = 0.5


class Kept(Generic[T]):
    """The latest count of one thing (for one key: a count for another key replaces it), one
    per console (no global state). `wait` makes every caller count in its own thread when the
    kept count is stale (tests, the bench)."""

    def __init__(
        self, ttl: timedelta = TTL, *, wait: bool = False, patience: float = PATIENCE
    ) -> None:
        self.ttl = ttl
        self.wait = wait
        self.patience = patience
        self._lock = threading.Lock()
        self._kept: tuple[Hashable, datetime, T] | None = None
        self._counting: threading.Thread | None = None

    def get(
        self, key: Hashable, now: datetime, count: Callable[[], T]
    ) -> tuple[T | None, datetime | None]:
        """The count of `key` and when it was counted (up to `ttl` before `now`, or older
        while a recount runs); (None, None) while the first count runs. `count()` runs when
        the kept count is stale, in a thread of its own, with `now` as its instant."""
        if self.wait:
            fresh = self._fresh(key, now)
            return fresh if fresh is not None else self._count(key, now, count)
        with self._lock:
            kept = self._kept if self._kept and self._kept[0] == key else None
            stale = kept is None or not timedelta(0) <= now - kept[1] < self.ttl
            counting = self._counting
            if stale and counting is None:
                counting = self._counting = threading.Thread(
                    target=self._count, args=(key, now, count), daemon=True
                )
                counting.start()
        if kept is None and counting is not None:
            counting.join(self.patience)
            with self._lock:
                kept = self._kept if self._kept and self._kept[0] == key else None
        return (kept[2], kept[1]) if kept else (None, None)

    def _fresh(self, key: Hashable, now: datetime) -> tuple[T, datetime] | None:
        kept = self._kept
        if kept and kept[0] == key and timedelta(0) <= now - kept[1] < self.ttl:
            return kept[2], kept[1]
        return None

    def _count(self, key: Hashable, now: datetime, count: Callable[[], T]) -> tuple[T, datetime]:
        try:
            counted = count()
            with self._lock:
                self._kept = (key, now, counted)
            return counted, now
        finally:
            with self._lock:
                if self._counting is threading.current_thread():
                    self._counting = None

    def join(self) -> None:
        """Wait for a count running in the background (tests, the bench)."""
        counting = self._counting
        if counting is not None:
            counting.join()
