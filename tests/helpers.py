"""Small builders shared by tests: walking an engine through time."""

from __future__ import annotations

from datetime import datetime, timedelta

from campaign.clock import FixedClock
from campaign.delivery.passes import PassResult
from campaign.engine import App


def tick(app: App, clock: FixedClock, at: datetime) -> PassResult:
    clock.set(at)
    return app.dispatcher.run_pass(clock.now())


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(count)]
