"""The console's Plan page: the month as a timeline, each step with its numbers (sent, bounced,
failed, skipped, clicks, unsubscribes within 48 h) and its preview, as the studio renders it
(`campaign preview`), for a sample subscriber; and the confirmation email."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign.content.compose import Composed, Recipient
from campaign.content.snapshot import Content
from campaign.domain.plan import Step
from campaign.errors import RenderError, UnknownStep
from campaign.insights import reports
from campaign.storage.db import Database

#: The sample subscriber of every preview (the studio's).
SAMPLE = Recipient(0, "ann@example.com", "Ann")
#: Per-step numbers are counted over the whole delivery log: at a million subscribers that
#: takes longer than a page may, so a count this recent is shown again (with its age).
NUMBERS_TTL = timedelta(seconds=60)


@dataclass(frozen=True)
class TimelineStep:
    """One step of the month: when it goes, its subject and preheader, and its numbers."""

    key: str
    day: int
    subject: str
    preheader: str
    #: None while the first count runs.
    numbers: reports.StepStats | None


@dataclass(frozen=True)
class Timeline:
    plan_id: str
    name: str
    send_time: str
    steps: list[TimelineStep]
    has_confirmation: bool
    #: when the numbers were counted (up to NUMBERS_TTL old; None: being counted).
    counted_at: datetime | None


class NumbersCache:
    """The latest `reports.stats` of a plan, one per console (no global state).

    Counting walks the whole delivery log: at a million subscribers that takes seconds, more
    than a page may. So a page gets the kept numbers at once, with the instant they were
    counted, and once they are NUMBERS_TTL old one recount runs in a thread of its own. With
    nothing kept yet, the page waits up to `patience` for the first count, then shows the
    timeline without numbers ("counting"). `wait` makes every caller wait (tests, the bench).
    """

    def __init__(
        self, ttl: timedelta = NUMBERS_TTL, *, wait: bool = False, patience: float = 0.5
    ) -> None:
        self.ttl = ttl
        self.wait = wait
        self.patience = patience
        self._lock = threading.Lock()
        self._kept: tuple[str, datetime, reports.Stats] | None = None
        self._counting: threading.Thread | None = None

    def stats(
        self, db: Database, content: Content, now: datetime
    ) -> tuple[reports.Stats | None, datetime | None]:
        """The plan's numbers and when they were counted; (None, None) while the first count
        runs."""
        plan = content.plan
        if self.wait:
            kept = self._kept
            if kept and kept[0] == plan.id and timedelta(0) <= now - kept[1] < self.ttl:
                return kept[2], kept[1]
            return self._count(db, content, now)
        with self._lock:
            kept = self._kept if self._kept and self._kept[0] == plan.id else None
            stale = kept is None or not timedelta(0) <= now - kept[1] < self.ttl
            counting = self._counting
            if stale and counting is None:
                counting = self._counting = threading.Thread(
                    target=self._count, args=(db, content, now), daemon=True
                )
                counting.start()
        if kept is None and counting is not None:
            counting.join(self.patience)
            with self._lock:
                kept = self._kept if self._kept and self._kept[0] == plan.id else None
        return (kept[2], kept[1]) if kept else (None, None)

    def _count(
        self, db: Database, content: Content, now: datetime
    ) -> tuple[reports.Stats, datetime]:
        try:
            counted = reports.stats(db, content.plan)
            with self._lock:
                self._kept = (content.plan.id, now, counted)
            return counted, now
        finally:
            with self._lock:
                if self._counting is threading.current_thread():
                    self._counting = None

    def join(self) -> None:
        """Wait for a count running in the background (the bench)."""
        counting = self._counting
        if counting is not None:
            counting.join()


def timeline(db: Database, content: Content, now: datetime, cache: NumbersCache) -> Timeline:
    """Every step with its subject (rendered for the sample subscriber) and its numbers."""
    plan, composer = content.plan, content.composer
    numbers, counted_at = cache.stats(db, content, now)
    by_key = {row["key"]: row for row in numbers["steps"]} if numbers else {}
    steps = []
    for step in plan.steps:
        try:
            rendered = composer.render(step, SAMPLE, now)
            subject, preheader = rendered.subject, rendered.preheader
        except RenderError as exc:  # shown on its step: the other steps still preview
            subject, preheader = "(does not render)", exc.message
        steps.append(TimelineStep(step.key, step.day, subject, preheader, by_key.get(step.key)))
    return Timeline(
        plan.id,
        plan.name,
        f"{plan.send_time:%H:%M}",
        steps,
        plan.confirmation is not None,
        counted_at,
    )


def preview(content: Content, key: str, now: datetime) -> Composed:
    """Step `key` (or `confirmation`) composed for the sample subscriber, as the studio does;
    UnknownStep if the plan has none by that key."""
    plan, composer = content.plan, content.composer
    if key == "confirmation" and plan.confirmation is not None:
        return composer.compose(
            plan.confirmation,
            SAMPLE,
            message_id="<preview@example.com>",
            now=now,
            extra={"confirm_url": composer.confirm_url(0, now)},
            confirmation=True,
        )
    step: Step | None = plan.step_by_key(key)
    if step is None:
        raise UnknownStep(key)
    return composer.compose(step, SAMPLE, message_id="<preview@example.com>", now=now)
