"""What an edit of the plan changes, step by step (matched by key), before it goes live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from campaign.domain.plan import Plan, Step
from campaign.domain.weekdays import describe

#: `reaches_from_day` of a change that touches every active subscriber, whatever their day.
EVERYONE = 1 << 30


@dataclass(frozen=True)
class Change:
    kind: str  # added, removed, moved, changed, plan
    key: str
    detail: str
    #: subscribers yet to reach this step (only these can notice the change).
    reaches_from_day: int


def diff_plans(old: Plan, new: Plan) -> list[Change]:
    """Every difference between two plans; steps are the same step when their key is."""
    changes: list[Change] = []
    if old.id != new.id:
        changes.append(
            Change(
                "plan",
                "id",
                f"{old.id} -> {new.id}: subscribers under {old.id!r} get nothing more unless "
                f"moved first: `campaign plan rename {old.id} {new.id}`",
                EVERYONE,
            )
        )
    if old.send_time != new.send_time:
        changes.append(
            Change("plan", "send_time", f"{old.send_time:%H:%M} -> {new.send_time:%H:%M}", 0)
        )
    if old.send_days != new.send_days:
        detail = f"{describe(old.send_days)} -> {describe(new.send_days)}"
        changes.append(Change("plan", "send_days", detail, 0))
    if old.send_window != new.send_window:
        detail = f"{_hours(old.send_window)} -> {_hours(new.send_window)}"
        changes.append(Change("plan", "send_window_hours", detail, 0))
    if old.skip_after != new.skip_after:
        changes.append(Change("plan", "catch_up", f"{_catch_up(old)} -> {_catch_up(new)}", 0))
    if old.then != new.then:
        detail = f"{old.then or 'none'} -> {new.then or 'none'}: for those who graduate from now on"
        changes.append(Change("plan", "then", detail, 0))
    changes += _field_changes(old, new)
    before = {step.key: step for step in old.steps}
    after = {step.key: step for step in new.steps}
    for key, step in after.items():
        if key not in before:
            changes.append(
                Change("added", key, f"day {step.day}: sent to those not yet past it", step.day)
            )
    for key, step in before.items():
        if key not in after:
            changes.append(
                Change(
                    "removed", key, f"day {step.day}: not sent to anyone still to get it", step.day
                )
            )
    for key, step in after.items():
        old_step = before.get(key)
        if old_step is None:
            continue
        if old_step.day != step.day:
            changes.append(
                Change(
                    "moved",
                    key,
                    f"day {old_step.day} -> {step.day}: never sent twice; skipped by those "
                    f"already past day {step.day}",
                    old_step.day,
                )
            )
        fields = _changed_fields(old_step, step)
        if fields:
            changes.append(
                Change(
                    "changed",
                    key,
                    ", ".join(fields) + ": applies to every email not yet sent",
                    min(old_step.day, step.day),
                )
            )
    return changes


def _field_changes(old: Plan, new: Plan) -> list[Change]:
    """Custom fields added, removed or redeclared (values already stored are kept; one a
    declaration no longer allows shows as the default)."""
    before, after = old.declared_fields, new.declared_fields
    changes = [
        Change("plan", f"fields.{name}", "added: the form, API and imports take it", 0)
        for name in after
        if name not in before
    ]
    changes += [
        Change("plan", f"fields.{name}", "removed: stored values stay, templates lose it", 0)
        for name in before
        if name not in after
    ]
    changes += [
        Change(
            "plan",
            f"fields.{name}",
            "changed: a stored value it no longer allows shows as the default",
            0,
        )
        for name in after
        if name in before and before[name] != after[name]
    ]
    return changes


def _catch_up(plan: Plan) -> str:
    return "shift" if plan.skip_after is None else f"skip_after {plan.skip_after}"


def _hours(window: timedelta) -> str:
    return f"{window // timedelta(hours=1)}"


def _changed_fields(old: Step, new: Step) -> list[str]:
    names = (
        "subject",
        "preheader",
        "template",
        "attachments",
        "attaches_ebook",
        "send_time",
        "send_days",
        "variants",
    )
    return [name for name in names if getattr(old, name) != getattr(new, name)]


def affected(change: Change, active_by_last_day: Mapping[int, int]) -> int:
    """How many active subscribers have not yet passed the day the change is about."""
    return sum(count for day, count in active_by_last_day.items() if day < change.reaches_from_day)
