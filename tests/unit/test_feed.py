"""The feed claims the next batch in the background while the end of the current one is sent:
whatever happens meanwhile (a stop, a halt, an error while claiming), every claim it made is
either handed out once, in order, or given back; none is left to wait out its lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from campaign.delivery.feed import Feed
from campaign.errors import DatabaseError
from campaign.storage.store import Claim

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def _claim(n: int) -> Claim:
    return Claim(
        delivery_id=n,
        message_id=f"<{n}@example.org>",
        attempts=0,
        enrollment_id=n,
        step_key="day1",
        step_day=1,
        due_at=NOW,
        started_at=NOW,
        last_sent_at=None,
        subscriber_id=n,
        email=f"p{n}@example.org",
        first_name="",
        timezone="UTC",
    )


class Batches:
    """Claims batches of `size` out of `total` due claims, in order. A batch after the first
    waits for `go` (a database taking its time) once `gated` is set."""

    def __init__(self, total: int, size: int) -> None:
        self._due: Iterator[int] = iter(range(total))
        self._size = size
        self.calls = 0
        self.gated = False
        self.started = threading.Event()
        self.go = threading.Event()
        self.fail: Exception | None = None

    def __call__(self) -> list[Claim]:
        self.calls += 1
        if self.calls > 1 and self.gated:
            self.started.set()
            assert self.go.wait(5)
        if self.fail is not None and self.calls > 1:
            raise self.fail
        return [_claim(n) for _, n in zip(range(self._size), self._due, strict=False)]


def _ids(claims: list[Claim | None]) -> list[int | None]:
    return [None if c is None else c.delivery_id for c in claims]


def test_every_claim_is_handed_out_once_in_order_across_batches() -> None:
    batches = Batches(total=23, size=5)
    feed = Feed(batches, None)
    handed = []
    while (claim := feed.next()) is not None:
        handed.append(claim.delivery_id)
    assert handed == list(range(23))
    assert feed.claimed == 23
    assert feed.leftovers() == []


def test_the_next_batch_is_claimed_before_the_current_one_runs_out() -> None:
    """Connections keep sending the end of a batch while the next one is claimed, instead of
    all waiting for it at the batch's end."""
    batches = Batches(total=20, size=10)
    batches.gated = True
    feed = Feed(batches, None)
    first = [feed.next() for _ in range(5)]  # half of the first batch handed out
    assert batches.started.wait(5)  # the second batch is being claimed meanwhile
    rest = [feed.next() for _ in range(5)]  # the first batch's end goes out regardless
    assert _ids(first + rest) == list(range(10))
    batches.go.set()
    assert _ids([feed.next() for _ in range(11)]) == [*range(10, 20), None]


@pytest.mark.parametrize("ending", ["halt", "stop"])
def test_a_batch_being_claimed_when_the_pass_ends_is_given_back(ending: str) -> None:
    """A halt (relay gone, database error) or a stop (SIGTERM) while the next batch is being
    claimed: that batch is waited for and given back with the rest, so the next pass sends it
    at once instead of after its lease."""
    batches = Batches(total=20, size=10)
    batches.gated = True
    stop = threading.Event()
    feed = Feed(batches, stop)
    handed = [feed.next() for _ in range(6)]
    assert batches.started.wait(5)
    if ending == "halt":
        feed.halt(DatabaseError("database error: connection lost"))
    else:
        stop.set()
    assert feed.next() is None
    threading.Timer(0.2, batches.go.set).start()  # the claim finishes after the pass ended
    left = feed.leftovers()
    assert _ids(handed) == list(range(6))
    assert _ids(left) == list(range(6, 20))  # the first batch's rest, then the late batch
    assert feed.claimed == 20
    assert feed.stopped is (ending == "stop")


def test_an_error_claiming_the_next_batch_halts_the_pass_where_the_batch_is_needed() -> None:
    """The database fails while the next batch is claimed in the background: the current
    batch still goes out, then the error is raised to the connection that needs more, as a
    claim made there would have raised it."""
    batches = Batches(total=20, size=4)
    batches.fail = DatabaseError("database error: server closed the connection")
    feed = Feed(batches, None)
    assert _ids([feed.next() for _ in range(4)]) == [0, 1, 2, 3]
    with pytest.raises(DatabaseError, match="server closed the connection"):
        feed.next()
    assert feed.leftovers() == []
    assert feed.claimed == 4
