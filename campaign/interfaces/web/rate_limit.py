"""Signups per client address: a bounded, amortised O(1) sliding-window limiter."""

from __future__ import annotations

from collections import OrderedDict, deque

from campaign.clock import Clock


class RateLimiter:
    """At most `limit` events per `window` seconds for each key (a client address).

    Memory and work stay bounded however many clients come: each key keeps at most `limit`
    instants, keys are kept in least-recently-seen order, idle ones are dropped from the front
    as their window ends, and beyond `capacity` keys the least recently seen is forgotten
    (it may then start afresh, as after a restart). O(1) amortised per request.
    """

    def __init__(self, limit: int, window: float, clock: Clock, capacity: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.capacity = capacity
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def retry_after(self, key: str) -> int:
        """0 if `key` may go ahead now (and count it), else seconds until it may."""
        now = self.clock.monotonic()
        self._forget_idle(now)
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque(maxlen=self.limit)
            if len(self._events) > self.capacity:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return max(int(events[0] + self.window - now) + 1, 1)
        events.append(now)
        return 0

    def _forget_idle(self, now: float) -> None:
        # The front key is the least recently seen: once its newest event is out of the
        # window, nothing it did counts any more. Each key is dropped once: amortised O(1).
        while self._events:
            events = next(iter(self._events.values()))
            if events and events[-1] > now - self.window:
                return
            self._events.popitem(last=False)
