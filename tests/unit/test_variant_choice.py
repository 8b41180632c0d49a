"""Which subject an enrollment gets: the same answer every time, about even across people."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from campaign.domain.variants import choose_variant

NAMES = st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=5, unique=True)


def test_a_step_without_variants_chooses_none() -> None:
    """No test, no variant: the delivery records NULL."""
    assert choose_variant(7, "day01", ()) is None


def test_the_choice_is_fixed_for_an_enrollment_and_step() -> None:
    """Pinned values: a change of hash (or of what it hashes) would move people between
    variants in the middle of a test, across a deploy; this catches it."""
    two = "".join(str(choose_variant(i, "day01", ("a", "b"))) for i in range(1, 17))
    three = "".join(str(choose_variant(i, "day01", ("a", "b", "c"))) for i in range(1, 17))
    assert two == "bbaababbbaabaabb"
    assert three == "cbcccbcacabccbbc"


def test_the_choice_splits_enrollments_about_evenly() -> None:
    """Over 30,000 enrollments each of three variants gets a third, give or take 2%."""
    counts = Counter(choose_variant(i, "day01", ("a", "b", "c")) for i in range(1, 30_001))
    assert set(counts) == {"a", "b", "c"}
    assert all(abs(n - 10_000) < 600 for n in counts.values()), counts


def test_the_choice_of_one_step_says_nothing_of_the_next() -> None:
    """Two steps' tests are independent: those who got `a` on day 1 split evenly on day 2."""
    got_a = [i for i in range(1, 20_001) if choose_variant(i, "day01", ("a", "b")) == "a"]
    day2 = Counter(choose_variant(i, "day02", ("a", "b")) for i in got_a)
    assert abs(day2["a"] - len(got_a) / 2) < 0.03 * len(got_a), day2


@given(
    enrollment=st.integers(min_value=1, max_value=2**63 - 1),
    key=st.text(min_size=1, max_size=64),
    names=NAMES,
)
def test_the_choice_is_one_of_the_names_and_stable(
    enrollment: int, key: str, names: list[str]
) -> None:
    """Any enrollment and step gets one of the step's variants, the same one when asked again
    (as another process or a retry would ask)."""
    chosen = choose_variant(enrollment, key, names)
    assert chosen in names
    assert choose_variant(enrollment, key, tuple(names)) == chosen
