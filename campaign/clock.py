"""The clock: the one place that reads wall time, so everything else takes `now` as a value."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where time comes from: the wall clock in production, a fixed instant in tests."""

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for pacing and timeouts."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait; a fixed clock advances instead of waiting."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FixedClock:
    """A clock that stands still until told to move: `--now` on the CLI and every test."""

    def __init__(self, instant: datetime) -> None:
        self._now = as_utc(instant)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=max(seconds, 0.0)))

    def advance(self, delta: timedelta) -> None:
        self._now += delta
        self._mono += delta.total_seconds()

    def set(self, instant: datetime) -> None:
        self._mono += max((as_utc(instant) - self._now).total_seconds(), 0.0)
        self._now = as_utc(instant)


def as_utc(instant: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are refused rather than guessed."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant.isoformat()} has no UTC offset")
    return instant.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant that carries an offset, e.g. 2026-12-01T07:00:00+00:00."""
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 instant") from exc
    if instant.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (write e.g. {text}+00:00)")
    if not 1970 <= instant.year <= 9000:  # a plan's days are added to it: keep them in range
        raise ValueError(f"{text!r} is not between the years 1970 and 9000")
    return as_utc(instant)
