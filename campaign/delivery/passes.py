"""What a sending pass is told (SendPolicy) and what it reports (PassResult), and the relay's
request to slow down (RelayThrottled)."""

from __future__ import annotations

from dataclasses import dataclass, field

from campaign.errors import DatabaseError, TemporaryFailure


def is_throttle(failure: TemporaryFailure) -> bool:
    return (failure.enhanced_code or "").startswith("4.7.")


@dataclass(frozen=True)
class SendPolicy:
    batch_size: int = 200
    lease_seconds: int = 300
    max_attempts: int = 5
    retry_base_seconds: int = 60
    rate_per_second: float = 0.0
    rate_per_hour: float = 0.0
    soft_bounce_limit: int = 3
    connections: int = 1
    #: how often a message whose outcome stayed unknown (no final reply) is tried again: 0 or 1.
    unknown_outcome_retries: int = 1
    #: lesson emails per person per local day across plans (MAX_PER_DAY).
    max_per_day: int = 1


@dataclass
class PassResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    released: int = 0
    #: outcomes unknown (no reply to the final dot): retried once, or settled as unknown.
    unknown: int = 0
    #: claims another engine took over after their lease ran out: not sent by this one.
    lost: int = 0
    error: str | None = None
    stopped: bool = False
    #: why the pass ended before everything due was handed out (None: it did not).
    halted_by: BaseException | None = None
    #: seconds from each welcome's enrollment (confirmation, or signup) to the server's 250.
    welcome_seconds: list[float] = field(default_factory=list)

    def add(self, other: PassResult) -> None:
        self.welcome_seconds.extend(other.welcome_seconds)
        for name in (
            "sent",
            "retried",
            "failed",
            "bounced",
            "skipped",
            "released",
            "unknown",
            "lost",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def add_pass(self, other: PassResult) -> None:
        """Add a whole pass run beside this one (a sender process's): its counts and claims,
        its error if this has none, whether it stopped, and a database it lost."""
        self.add(other)
        self.claimed += other.claimed
        self.error = self.error or other.error
        self.stopped = self.stopped or other.stopped
        if isinstance(other.halted_by, DatabaseError) and not isinstance(
            self.halted_by, DatabaseError
        ):
            self.halted_by = other.halted_by

    def summary(self) -> str:
        return (
            f"claimed={self.claimed} sent={self.sent} retried={self.retried} "
            f"failed={self.failed} bounced={self.bounced} skipped={self.skipped}"
            f" unknown={self.unknown} lost={self.lost}"
        )
