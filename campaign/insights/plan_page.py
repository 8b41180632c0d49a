"""The console's Plan page: the month as a timeline, each step with its numbers (sent, bounced,
failed, skipped, clicks, unsubscribes within 48 h) and its preview, as the studio renders it
(`campaign preview`), for a sample subscriber; and the confirmation email."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from campaign.content.compose import Composed, Recipient
from campaign.content.snapshot import Content
from campaign.domain.plan import Step
from campaign.errors import RenderError, UnknownStep
from campaign.insights import reports, simulation
from campaign.insights.kept import PATIENCE, TTL, Kept
from campaign.insights.subject_tests import SubjectTest
from campaign.storage.db import Database

#: The sample subscriber of every preview (the studio's), and the zone of its sample dates.
SAMPLE = Recipient(0, "ann@example.com", "Ann")
UTC_ZONE = ZoneInfo("UTC")
#: Per-step numbers are counted over the whole delivery log: at a million subscribers that
#: takes longer than a page may, so a count this recent is shown again (with its age).
NUMBERS_TTL = TTL


@dataclass(frozen=True)
class TimelineStep:
    """One step of the month: when it goes, its subject and preheader, and its numbers."""

    key: str
    day: int
    subject: str
    preheader: str
    #: None while the first count runs.
    numbers: reports.StepStats | None
    #: `at signup`, or the step's local send time and days, e.g. `07:00 local, Mon-Fri`.
    when: str = ""
    #: when it goes for someone signing up now (UTC), e.g. `Mon 7 Dec 07:00 (moved from Sat
    #: 5 Dec)` for a step that send_days moved.
    example: str = ""


@dataclass(frozen=True)
class Timeline:
    plan_id: str
    name: str
    send_time: str
    steps: list[TimelineStep]
    has_confirmation: bool
    #: when the numbers were counted (up to NUMBERS_TTL old; None: being counted).
    counted_at: datetime | None
    #: the plan's send days and window, in a sentence.
    sending_rule: str = ""
    #: each step's subject test with its numbers (empty while the first count runs).
    subject_tests: list[SubjectTest] = field(default_factory=list)


class NumbersCache(Kept[reports.Stats]):
    """The latest `reports.stats` of a plan, one per console: counting walks the whole
    delivery log (seconds at a million subscribers), so it runs in the background and a page
    shows the last count (`Kept`)."""

    def __init__(
        self, ttl: timedelta = NUMBERS_TTL, *, wait: bool = False, patience: float = PATIENCE
    ) -> None:
        super().__init__(ttl, wait=wait, patience=patience)

    def stats(
        self, db: Database, content: Content, now: datetime
    ) -> tuple[reports.Stats | None, datetime | None]:
        """The plan's numbers and when they were counted; (None, None) while the first count
        runs."""
        plan = content.plan
        return self.get(plan.id, now, lambda: reports.stats(db, plan))


def timeline(db: Database, content: Content, now: datetime, cache: NumbersCache) -> Timeline:
    """Every step with its subject (rendered for the sample subscriber) and its numbers."""
    plan, composer = content.plan, content.composer
    numbers, counted_at = cache.stats(db, content, now)
    by_key = {row["key"]: row for row in numbers["steps"]} if numbers else {}
    steps = []
    sample_dates = {item.step.key: item for item in simulation.dates(plan, now, UTC_ZONE)}
    for step in plan.steps:
        try:
            rendered = composer.render(step, SAMPLE, now)
            subject, preheader = rendered.subject, rendered.preheader
        except RenderError as exc:  # shown on its step: the other steps still preview
            subject, preheader = "(does not render)", exc.message
        dated = sample_dates[step.key]
        steps.append(
            TimelineStep(
                step.key,
                step.day,
                subject,
                preheader,
                by_key.get(step.key),
                simulation.when_local(plan, step),
                f"{simulation.short_date(dated.local.date())} {dated.local:%H:%M}"
                + simulation.moved_note(dated),
            )
        )
    return Timeline(
        plan.id,
        plan.name,
        f"{plan.send_time:%H:%M}",
        steps,
        plan.confirmation is not None,
        counted_at,
        simulation.sending_rule(plan),
        numbers["subject_tests"] if numbers else [],
    )


def preview(content: Content, key: str, now: datetime, variant: str | None = None) -> Composed:
    """Step `key` (or `confirmation`) composed for the sample subscriber, as the studio does,
    with the subject of its test's `variant` if it has one by that name; UnknownStep if the
    plan has no step by that key."""
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
    step = step.with_variant(variant)
    return composer.compose(step, SAMPLE, message_id="<preview@example.com>", now=now)
