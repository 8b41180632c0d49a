"""Sending limits: SEND_RATE_PER_SECOND and SEND_RATE_PER_HOUR as token buckets in the database.

Every engine on one database takes its tokens from the same rows, so the limits hold in total
however many instances run. Tokens are taken a few at a time to keep database trips rare.
"""

from __future__ import annotations

import math
import threading

from campaign.clock import Clock
from campaign.storage import store
from campaign.storage.db import Database
from campaign.storage.store import Bucket

#: take about this many seconds of sending per database trip.
_CHUNK_SECONDS = 0.05
#: never poll the buckets faster than this while waiting for a token.
_MIN_WAIT_SECONDS = 0.005
#: look at the stop flag at least this often while waiting (SIGTERM must end within 10 s).
_MAX_WAIT_SECONDS = 1.0


# Not a CampaignError: a signal from the wait to the pass that the engine is stopping, never
# shown to anyone, so it stays beside the wait that raises it.
class StopWaiting(Exception):
    """The engine is stopping while a message waited for its turn under a rate limit."""


def buckets_for(per_second: float, per_hour: float) -> list[Bucket]:
    """The buckets for the configured limits (0 means no limit). A per-second limit may burst
    by one second's worth; a per-hour limit by one minute's worth."""
    buckets = []
    if per_second > 0:
        buckets.append(Bucket("per_second", per_second, max(1.0, per_second)))
    if per_hour > 0:
        buckets.append(Bucket("per_hour", per_hour / 3600, max(1.0, per_hour / 60)))
    return buckets


class SendBudget:
    """Blocks each send until the shared buckets allow it; free when no limit is set."""

    def __init__(self, db: Database, clock: Clock, buckets: list[Bucket]) -> None:
        self._db = db
        self._clock = clock
        self._buckets = buckets
        self._chunk = max(1, math.floor(min((b.rate for b in buckets), default=0) * _CHUNK_SECONDS))
        self._tokens = 0
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        """Messages per second at most, by the tightest limit (0: no limit)."""
        return min((bucket.rate for bucket in self._buckets), default=0.0)

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Wait for a token; the seconds waited. Raises StopWaiting if `stop` is set meanwhile."""
        if not self._buckets:
            return 0.0
        started = self._clock.monotonic()
        with self._lock:  # one waiter asks the database; the others queue behind it
            while self._tokens == 0:
                if stop is not None and stop.is_set():
                    raise StopWaiting
                now = self._clock.now()
                with self._db.transaction() as session:
                    granted = store.take_tokens(session, self._buckets, self._chunk, now)
                    wait = 0.0 if granted else store.wait_for_token(session, self._buckets, now)
                if granted:
                    self._tokens = granted
                else:
                    self._clock.sleep(min(max(wait, _MIN_WAIT_SECONDS), _MAX_WAIT_SECONDS))
            self._tokens -= 1
        return self._clock.monotonic() - started
