"""Weekday names as a plan writes them (`mon` .. `sun`) and sets of sending days, pure.

A day is `date.weekday()`'s number: Monday is 0, Sunday 6.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

WeekdayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[WeekdayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: the default: a plan that names no send_days sends on any day.
EVERY_DAY: frozenset[int] = frozenset(range(7))


def days_from_names(names: Iterable[str]) -> frozenset[int]:
    """The weekday numbers of names the plan's schema already checked."""
    return frozenset(WEEKDAYS.index(name) for name in names)


def describe(days: frozenset[int]) -> str:
    """Sending days for people: `every day`, `Mon-Fri`, `Mon-Thu, Sat`, `Sat, Sun`."""
    if days == EVERY_DAY:
        return "every day"
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts: list[str] = []
    for run in runs:
        names = [WEEKDAYS[day].capitalize() for day in run]
        parts += [f"{names[0]}-{names[-1]}"] if len(run) > 2 else names
    return ", ".join(parts)
