"""The group commit of SQLite's per-email records (campaign.storage.locks.CombinedWrites):
writes queued while a batch runs go together in the next one, run by one of their threads;
each thread gets its own write's result or error, and only once it is settled; a thread torn
down in the middle of its batch leaves the others' writes to the next one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from campaign.storage.locks import CombinedWrites, QueuedWrite, RunBatch, WriteLock


class Dying(BaseException):
    """What tears a thread down mid-batch (as SystemExit or KeyboardInterrupt would)."""


class Writers:
    """Threads that each queue one write, and what became of it."""

    def __init__(self, combined: CombinedWrites, run_batch: RunBatch):
        self.combined = combined
        self.run_batch = run_batch
        self.results: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def start(self, work: str) -> None:
        def write() -> None:
            try:
                self.results[work] = self.combined.run(work, self.run_batch)
            except (Exception, Dying) as exc:
                self.results[work] = exc

        thread = threading.Thread(target=write, name=f"writer-{work}")
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def until(condition: Callable[[], bool]) -> None:
    """Wait for other threads to reach a point (not for a schedule): at most 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the other threads never got there"
        time.sleep(0.001)


class Batches:
    """A `run_batch` that settles each write with its text upper-cased, keeps what it ran,
    holds its first batch until `first_may_end` is set, refuses the `refused` writes, dies in
    batch number `dies_in`, and lets writes queued meanwhile join it if `joins`."""

    def __init__(
        self, refused: tuple[str, ...] = (), dies_in: int | None = None, joins: bool = False
    ) -> None:
        self.ran: list[list[str]] = []
        self.first_may_end = threading.Event()
        self.refused = refused
        self.dies_in = dies_in
        self.joins = joins

    def __call__(self, batch: list[QueuedWrite], join: Callable[[], None]) -> None:
        self.ran.append([queued.work for queued in batch])
        if len(self.ran) == 1:
            self.first_may_end.wait(10)
        if len(self.ran) == self.dies_in:
            raise Dying()  # its runner dies before settling anything
        if self.joins:
            join()
            self.ran[-1] = [queued.work for queued in batch]
        for queued in batch:
            if queued.work in self.refused:
                queued.fail(ValueError(f"refused: {queued.work}"))
            else:
                queued.succeed(queued.work.upper())


def queue_behind_a_running_batch(
    combined: CombinedWrites, batches: Batches, first: str, rest: str | tuple[str, ...]
) -> Writers:
    """`first` runs a batch of its own, held; then each of `rest` queues behind it."""
    writers = Writers(combined, batches)
    writers.start(first)
    until(lambda: len(batches.ran) == 1)
    for work in rest:
        writers.start(work)
    until(lambda: combined.waiting == len(rest))
    return writers


@pytest.fixture
def lock(tmp_path: Path) -> WriteLock:
    return WriteLock(tmp_path / "campaign.db")


def test_writes_queued_while_a_batch_runs_go_together_in_the_next(lock: WriteLock) -> None:
    combined, batches = CombinedWrites(lock), Batches()
    writers = queue_behind_a_running_batch(combined, batches, "a", "bcd")
    assert writers.results == {}  # nobody returns before their write is settled
    batches.first_may_end.set()
    writers.join()
    assert batches.ran[0] == ["a"]
    assert sorted(batches.ran[1]) == ["b", "c", "d"]
    assert len(batches.ran) == 2
    assert writers.results == {"a": "A", "b": "B", "c": "C", "d": "D"}


def test_writes_queued_while_a_batch_runs_join_it_before_its_commit(lock: WriteLock) -> None:
    combined, batches = CombinedWrites(lock), Batches(joins=True)
    writers = queue_behind_a_running_batch(combined, batches, "a", "bcd")
    batches.first_may_end.set()
    writers.join()
    (only,) = batches.ran  # no second batch: b, c and d were committed with a
    assert only[0] == "a"
    assert sorted(only[1:]) == ["b", "c", "d"]
    assert writers.results == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert combined.waiting == 0


def test_each_writer_gets_its_own_error_and_the_others_their_results(lock: WriteLock) -> None:
    combined, batches = CombinedWrites(lock), Batches(refused=("bad",))
    writers = queue_behind_a_running_batch(combined, batches, "first", ("good", "bad", "fine"))
    batches.first_may_end.set()
    writers.join()
    failure = writers.results.pop("bad")
    assert isinstance(failure, ValueError)
    assert str(failure) == "refused: bad"
    assert writers.results == {"first": "FIRST", "good": "GOOD", "fine": "FINE"}


def test_a_thread_torn_down_mid_batch_leaves_the_others_writes_to_the_next(
    lock: WriteLock,
) -> None:
    combined, batches = CombinedWrites(lock), Batches(dies_in=2)
    writers = queue_behind_a_running_batch(combined, batches, "a", "bcd")
    batches.first_may_end.set()
    writers.join()
    (runner,) = [work for work, result in writers.results.items() if isinstance(result, Dying)]
    survivors = sorted(set("bcd") - {runner})
    assert sorted(batches.ran[2]) == survivors  # run again, by one of them
    assert {work: writers.results[work] for work in survivors} == {
        work: work.upper() for work in survivors
    }
    assert combined.waiting == 0


def test_a_thread_inside_its_own_write_runs_its_write_at_once(lock: WriteLock) -> None:
    """A thread that holds the lock does not wait for the batch running meanwhile: that batch
    waits for this very lock."""
    combined, batches = CombinedWrites(lock), Batches()
    batches.first_may_end.set()
    writers = Writers(combined, batches)
    with lock.held():
        writers.start("other")
        until(lambda: combined.running)  # its batch waits for the lock held here
        assert combined.run("mine", batches) == "MINE"
        assert batches.ran == [["mine"]]
    writers.join()
    assert batches.ran == [["mine"], ["other"]]
    assert writers.results == {"other": "OTHER"}


def test_many_threads_writing_at_once_each_get_their_own_result_once(lock: WriteLock) -> None:
    """32 threads, 40 writes each, against batches that take varying time: no write is lost,
    run twice or answered to another thread, and no thread is left asleep."""
    combined = CombinedWrites(lock)
    ran: list[str] = []

    def run_batch(batch: list[QueuedWrite], join: Callable[[], None]) -> None:
        settled = 0
        while settled < len(batch):
            for queued in batch[settled:]:
                time.sleep(0)  # give the interpreter to the writers queueing meanwhile
                queued.succeed(queued.work.upper())
                ran.append(queued.work)
                settled += 1
            join()

    wrong: list[tuple[str, object]] = []

    def writer(name: str) -> None:
        for n in range(40):
            work = f"{name}-{n}"
            result = combined.run(work, run_batch)
            if result != work.upper():
                wrong.append((work, result))

    threads = [threading.Thread(target=writer, args=(f"w{t}",), daemon=True) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a writer was never woken"
    assert wrong == []
    assert sorted(ran) == sorted(f"w{t}-{n}" for t in range(32) for n in range(40))
    assert not combined.running
    assert combined.waiting == 0
