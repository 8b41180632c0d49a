"""What one person in several plans receives, and when, without sending: each plan joined at
its instant, the daily cap across plans (`MAX_PER_DAY`) and `then:` chaining, as the scheduler
decides them when every pass runs on time.

The rules are the scheduler's, applied in the order its passes would meet them: the email due
first goes first (of two due at once, the enrollment that started first); a lesson (any step
but a plan's day 0) past the day's cap waits for the next of its step's sending days after
today, at the step's send time, and its plan's later steps move with it; a plan's last step
enrols the graduate in its `then:` plan past that plan's day 0, unless they were ever in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from campaign.domain import schedule
from campaign.domain.plan import Plan, Step


@dataclass(frozen=True)
class Join:
    """A signup for `plan_id` at `at` (a plan the person runs or finished starts nothing)."""

    plan_id: str
    at: datetime


@dataclass(frozen=True)
class PersonEmail:
    """One email of one plan for the person."""

    plan_id: str
    step: Step
    at: datetime
    local: datetime
    #: the local date the step's own day falls on, when send days or the cap moved it later.
    moved_from: date | None
    #: the daily cap held it back at least once (another plan's lesson went that day).
    capped: bool
    #: sent as part of a plan the person was chained into by `then:`.
    chained: bool


@dataclass
class _Run:
    """One enrollment while the simulation walks it."""

    plan: Plan
    started_at: datetime
    order: int
    index: int
    due: datetime
    chained: bool = False
    capped: bool = False

    @property
    def step(self) -> Step:
        return self.plan.steps[self.index]

    @property
    def done(self) -> bool:
        return self.index >= len(self.plan.steps)


@dataclass
class _Person:
    plans: Mapping[str, Plan]
    tz: ZoneInfo
    max_per_day: int
    runs: list[_Run] = field(default_factory=list)
    lessons_on: dict[date, int] = field(default_factory=dict)

    def ever_in(self, plan_id: str) -> bool:
        return any(run.plan.id == plan_id for run in self.runs)

    def join(self, plan: Plan, at: datetime) -> None:
        if not self.ever_in(plan.id):
            self.runs.append(_Run(plan, at, len(self.runs), 0, at))

    def next_run(self) -> _Run | None:
        waiting = [run for run in self.runs if not run.done]
        return min(waiting, key=lambda r: (r.due, r.started_at, r.order), default=None)

    def over_cap(self, run: _Run) -> bool:
        """True (and the lesson moved) when today's lessons already reach the cap."""
        if run.step.day == 0:
            return False  # the welcome goes at once and is not counted
        today = schedule.local_date(run.due, self.tz)
        if self.lessons_on.get(today, 0) < self.max_per_day:
            self.lessons_on[today] = self.lessons_on.get(today, 0) + 1
            return False
        day = schedule.sending_day(run.plan, run.step, today + timedelta(days=1))
        run.due = schedule.local_instant(day, run.plan.send_time_of(run.step), self.tz)
        run.capped = True
        return True

    def send(self, run: _Run) -> PersonEmail:
        step, at = run.step, run.due
        own_day = schedule.local_date(run.started_at, self.tz) + timedelta(days=step.day)
        local = at.astimezone(self.tz)
        email = PersonEmail(
            run.plan.id,
            step,
            at,
            local,
            own_day if local.date() != own_day and step.day > 0 else None,
            run.capped,
            run.chained,
        )
        run.index, run.capped = run.index + 1, False
        if not run.done:
            run.due = schedule.due_at(run.plan, run.step, run.started_at, self.tz, at)
        else:
            self.chain(run.plan, at)
        return email

    def chain(self, plan: Plan, graduated_at: datetime) -> None:
        following = self.plans.get(plan.then) if plan.then else None
        if following is None or self.ever_in(following.id):
            return
        start = schedule.chained_start(following, graduated_at, self.tz)
        if start is None:
            return
        first, due = start
        index = following.steps.index(first)
        self.runs.append(_Run(following, graduated_at, len(self.runs), index, due, chained=True))


def person_timeline(
    plans: Mapping[str, Plan],
    joins: Sequence[Join],
    timezone: str,
    *,
    max_per_day: int = 1,
    until: datetime | None = None,
) -> list[PersonEmail]:
    """Every email the person gets from `joins`, in the order they go, up to `until` (None:
    until every plan, and every plan chained from them, has ended). `max_per_day` None or 0
    means no cap (plans that run one after the other)."""
    tz = schedule.zone(timezone)
    person = _Person(plans, tz, max_per_day or 1_000_000)
    pending = sorted(enumerate(joins), key=lambda item: (item[1].at, item[0]))
    out: list[PersonEmail] = []
    while True:
        run = person.next_run()
        # A signup at or before the next due instant happens first (the pass follows it).
        if pending and (run is None or pending[0][1].at <= run.due):
            join = pending.pop(0)[1]
            person.join(plans[join.plan_id], join.at)
            continue
        if run is None or (until is not None and run.due > until):
            return out
        if person.over_cap(run):
            continue
        out.append(person.send(run))
