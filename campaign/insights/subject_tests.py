"""Subject tests in numbers: per variant of a step's subject, emails sent, clicked and
followed by an unsubscribe, and whether each variant's rates differ from the first's by more
than chance (`campaign.insights.significance`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from campaign.domain.plan import Plan
from campaign.insights.significance import Proportion, two_proportion_test, verdict
from campaign.storage.store import VariantCounts


class VariantStats(TypedDict):
    """One subject of a test: its numbers, and its subject as the plan writes it now."""

    name: str
    #: "" when the plan no longer has this variant (the test ended, or it was removed).
    subject: str
    sent: int
    #: emails sent with at least one click: the click rate's numerator.
    clicked: int
    clicks: int
    click_rate: float
    unsubscribes_48h: int
    unsubscribe_rate: float


class VariantComparison(TypedDict):
    """A variant's rate against the first variant's: a pooled two-proportion z-test."""

    measure: str
    control: str
    variant: str
    z: float
    p_value: float
    #: at least 30 sends per variant and 5 expected in each cell (else the p-value says little).
    enough_data: bool
    #: p < 0.05 with enough data.
    significant: bool
    statement: str


class SubjectTest(TypedDict):
    step: str
    day: int
    #: the plan still tests this step's subject (False: ended; the recorded numbers remain).
    running: bool
    variants: list[VariantStats]
    comparisons: list[VariantComparison]


def subject_tests(
    plan: Plan,
    counts: Mapping[tuple[str, str], VariantCounts],
    unsubscribes: Mapping[tuple[str, str | None], int],
) -> list[SubjectTest]:
    """Every step that tests its subject now or did (its deliveries recorded variants)."""
    tests: list[SubjectTest] = []
    recorded = {key for key, _ in counts}
    for step in plan.steps:
        if not step.variants and step.key not in recorded:
            continue
        subjects = {variant.name: variant.subject for variant in step.variants}
        seen = sorted(name for key, name in counts if key == step.key and name not in subjects)
        variants: list[VariantStats] = []
        for name in [*subjects, *seen]:
            found = counts.get((step.key, name), VariantCounts(0, 0, 0))
            left = unsubscribes.get((step.key, name), 0)
            variants.append(
                {
                    "name": name,
                    "subject": subjects.get(name, ""),
                    "sent": found.sent,
                    "clicked": found.clicked,
                    "clicks": found.clicks,
                    "click_rate": found.clicked / found.sent if found.sent else 0.0,
                    "unsubscribes_48h": left,
                    "unsubscribe_rate": left / found.sent if found.sent else 0.0,
                }
            )
        tests.append(
            {
                "step": step.key,
                "day": step.day,
                "running": bool(step.variants),
                "variants": variants,
                "comparisons": _comparisons(variants),
            }
        )
    return tests


def _comparisons(variants: list[VariantStats]) -> list[VariantComparison]:
    """Each variant after the first against the first (the step's own subject, `a`)."""
    if len(variants) < 2:
        return []
    control = variants[0]
    found: list[VariantComparison] = []
    for other in variants[1:]:
        for measure, field in (("click rate", "clicked"), ("unsubscribe rate", "unsubscribes")):
            first, second = (_proportion(variant, field) for variant in (control, other))
            result = two_proportion_test(first, second)
            found.append(
                {
                    "measure": measure,
                    "control": control["name"],
                    "variant": other["name"],
                    "z": round(result.z, 4),
                    "p_value": round(result.p_value, 4),
                    "enough_data": result.enough_data,
                    "significant": result.significant,
                    "statement": verdict(measure, control["name"], first, other["name"], second),
                }
            )
    return found


def _proportion(variant: VariantStats, field: str) -> Proportion:
    successes = variant["clicked"] if field == "clicked" else variant["unsubscribes_48h"]
    return Proportion(successes, variant["sent"])
