"""The variables a template may use, each with an example value: read off the context the
composer builds for a sample subscriber, so the list is never out of date (`plan vars`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaign.content.compose import Composer, Recipient

#: the sample subscriber the examples are rendered for.
SAMPLE = Recipient(0, "ann@example.com", "Ann")


@dataclass(frozen=True)
class Variable:
    """One name a template may print, e.g. `subscriber.first_name`."""

    name: str
    example: Any
    #: "every email", or "confirmation email only" for names only the double opt-in email has.
    where: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "example": self.example, "where": self.where}


def template_variables(composer: Composer, now: datetime) -> list[Variable]:
    """Every variable of the plan's first step and of its confirmation email, sorted by name."""
    plan = composer.plan
    steps = composer.template_context(plan.steps[0], SAMPLE, now)
    found = {name: Variable(name, value, "every email") for name, value in _leaves(steps)}
    if plan.confirmation is not None:
        context = composer.template_context(
            plan.confirmation, Recipient(0, SAMPLE.email, ""), now, confirmation_id=0
        )
        for name, value in _leaves(context):
            found.setdefault(name, Variable(name, value, "confirmation email only"))
    return sorted(found.values(), key=lambda variable: variable.name)


def _leaves(context: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`subscriber.first_name`-style paths to every value that is not itself a mapping."""
    for key, value in context.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{name}.")
        else:
            yield name, value
