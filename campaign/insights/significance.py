"""Whether two variants' rates differ by more than chance: the pooled two-proportion z-test,
in closed form (math.erfc), and the plain sentence a marketer reads. Pure: no database."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Below this many sends in a variant, a rate says little: the normal approximation is poor.
MIN_SAMPLE = 30
#: ... nor when fewer than this many successes (or failures) are expected in a variant.
MIN_EXPECTED = 5
#: The level at which a difference is called more than chance.
ALPHA = 0.05


@dataclass(frozen=True)
class Proportion:
    """`successes` out of `trials` (clicks of the emails sent, say)."""

    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else 0.0


@dataclass(frozen=True)
class Comparison:
    """The test of two proportions: z, the two-sided p-value, and whether the samples are
    large enough for the test to mean anything."""

    z: float
    p_value: float
    enough_data: bool

    @property
    def significant(self) -> bool:
        return self.enough_data and self.p_value < ALPHA


def two_proportion_test(first: Proportion, second: Proportion) -> Comparison:
    """The pooled two-proportion z-test of `second`'s rate against `first`'s.

    z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2)), p the pooled rate; the two-sided p-value
    is erfc(|z| / sqrt 2). Equal rates with no spread (all or none succeeded) give z = 0, p = 1.
    """
    n1, n2 = first.trials, second.trials
    if n1 == 0 or n2 == 0:
        return Comparison(0.0, 1.0, enough_data=False)
    pooled = (first.successes + second.successes) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = 0.0 if spread == 0 else (second.rate - first.rate) / spread
    p_value = math.erfc(abs(z) / math.sqrt(2))
    expected = [n * share for n in (n1, n2) for share in (pooled, 1 - pooled)]
    enough = min(n1, n2) >= MIN_SAMPLE and min(expected) >= MIN_EXPECTED
    return Comparison(z, p_value, enough)


def percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def verdict(
    what: str, first_name: str, first: Proportion, second_name: str, second: Proportion
) -> str:
    """The comparison as a sentence, e.g. "b's click rate (4.1% of 1,203) is higher than a's
    (2.9% of 1,198); p = 0.03: more than chance at the 5% level"."""
    result = two_proportion_test(first, second)

    if second.rate > first.rate:
        relation = "is higher than"
    elif second.rate < first.rate:
        relation = "is lower than"
    else:
        relation = "equals"
    head = (
        f"{second_name}'s {what} ({percent(second.rate)} of {second.trials:,}) {relation}"
        f" {first_name}'s ({percent(first.rate)} of {first.trials:,})"
    )
    if not result.enough_data:
        return (
            f"{head}: too few to tell yet (the test needs {MIN_SAMPLE} sends per variant and"
            f" {MIN_EXPECTED} expected in each); keep the test running"
        )
    shown = "p < 0.001" if result.p_value < 0.001 else f"p = {result.p_value:.2f}"
    if result.significant:
        return f"{head}; {shown}: more than chance at the {ALPHA:.0%} level"
    return f"{head}; {shown}: could be chance; keep the test running"
