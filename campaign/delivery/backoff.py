"""The relay's back-off: after the mail server asks us to slow down (4.7.x), no pass of this
process sends until the back-off ends; it doubles while the server keeps asking."""

from __future__ import annotations

from datetime import datetime

from campaign.domain import schedule
from campaign.errors import RelayThrottled


class RelayBackoff:
    """When this process may send again after a throttle reply, and how long the next one
    makes it wait. A throttle uses no message's attempts: it is about the relay, not them."""

    def __init__(self, base_seconds: int) -> None:
        self._base_seconds = base_seconds
        #: throttle replies since the last accepted message.
        self._throttles = 0
        #: no pass sends before this instant (None: not backing off).
        self.paused_until: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why a pass at `now` must not send (the pass's error), or None when it may."""
        if self.paused_until is not None and now < self.paused_until:
            return f"relay throttled: backing off until {self.paused_until:%H:%M:%S}"
        return None

    def throttled(self, reply: RelayThrottled, now: datetime) -> str:
        """The server asked a pass at `now` to slow down: back off, twice as long as last
        time while it keeps asking. Returns the pass's error."""
        self._throttles += 1
        delay = schedule.retry_delay(self._throttles, self._base_seconds, 1.0)
        self.paused_until = now + delay
        return f"relay throttled ({reply.message}); backing off {delay}"

    def relieved(self) -> None:
        """A message was accepted: the next throttle starts from the shortest back-off."""
        self._throttles = 0
