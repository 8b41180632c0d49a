"""The per-client signup limiter: exact within its window, bounded however many clients."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

from campaign.clock import FixedClock
from campaign.interfaces.web import RateLimiter

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_a_client_over_its_limit_waits_until_its_window_ends() -> None:
    """The sixth signup in a minute is refused with the seconds left; later it goes ahead."""
    clock = FixedClock(NOW)
    limiter = RateLimiter(5, 60.0, clock)
    assert [limiter.retry_after("203.0.113.9") for _ in range(5)] == [0] * 5
    clock.advance(timedelta(seconds=20))
    assert limiter.retry_after("203.0.113.9") == 41
    assert limiter.retry_after("198.51.100.1") == 0  # someone else is not held up
    clock.advance(timedelta(seconds=41))
    assert limiter.retry_after("203.0.113.9") == 0


def test_memory_stays_bounded_with_a_hundred_thousand_clients_at_once() -> None:
    """100k clients inside one window: at most `capacity` are remembered, and the memory
    used does not grow past what that many take."""
    clock = FixedClock(NOW)
    limiter = RateLimiter(5, 60.0, clock, capacity=10_000)
    tracemalloc.start()
    try:
        for n in range(20_000):
            limiter.retry_after(f"10.0.{n // 256}.{n % 256}")
        _, at_capacity = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for n in range(20_000, 100_000):
            limiter.retry_after(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limiter) == 10_000
    assert peak < at_capacity * 1.2


def test_idle_clients_are_forgotten_as_their_window_ends() -> None:
    """Clients spread over time are dropped once idle for a window: memory follows the
    clients of the last minute, not every client ever seen."""
    clock = FixedClock(NOW)
    limiter = RateLimiter(5, 60.0, clock)
    for n in range(100_000):
        limiter.retry_after(f"client-{n}")
        clock.advance(timedelta(milliseconds=10))  # 100 new clients a second
    assert len(limiter) <= 6_001


def test_a_busy_client_is_not_forgotten_by_a_flood_of_new_ones_within_capacity() -> None:
    """A client at its limit stays limited while other clients come and go."""
    clock = FixedClock(NOW)
    limiter = RateLimiter(2, 60.0, clock, capacity=1_000)
    limiter.retry_after("spammer")
    limiter.retry_after("spammer")
    for n in range(500):
        limiter.retry_after(f"other-{n}")
    assert limiter.retry_after("spammer") > 0
