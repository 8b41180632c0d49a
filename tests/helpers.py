"""Small builders shared by tests: walking an engine through time."""

from __future__ import annotations

from datetime import datetime, timedelta

from campaign.bootstrap import App
from campaign.clock import FixedClock
from campaign.passes import PassResult


def tick(app: App, clock: FixedClock, at: datetime) -> PassResult:
    clock.set(at)
    return app.dispatcher.run_pass(clock.now())


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(count)]
