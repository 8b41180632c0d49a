"""The two-proportion z-test behind `campaign stats`' verdicts, against values worked by hand."""

from __future__ import annotations

import math

import pytest

from campaign.insights.significance import Proportion, two_proportion_test, verdict


def test_a_clear_difference_matches_the_hand_computation() -> None:
    """10% of 1,000 against 15% of 1,000: pooled p = 0.125, SE = sqrt(0.125 * 0.875 * 2/1000)
    = 0.014790, z = 3.3806, two-sided p = 0.000723."""
    result = two_proportion_test(Proportion(100, 1000), Proportion(150, 1000))
    assert result.z == pytest.approx(3.3806, abs=1e-4)
    assert result.p_value == pytest.approx(0.000723, abs=2e-6)
    assert result.enough_data
    assert result.significant


def test_the_textbook_example_gives_its_p_value() -> None:
    """45 of 100 against 56 of 100 (pooled 0.505): z = 1.5557, p = 0.1198, not significant."""
    result = two_proportion_test(Proportion(45, 100), Proportion(56, 100))
    assert result.z == pytest.approx(0.11 / math.sqrt(0.505 * 0.495 * 0.02), abs=1e-9)
    assert result.z == pytest.approx(1.5557, abs=1e-4)
    assert result.p_value == pytest.approx(0.1198, abs=1e-4)
    assert not result.significant


def test_the_order_of_the_variants_only_flips_the_sign() -> None:
    """b against a is a against b mirrored: same p-value, opposite z."""
    a, b = Proportion(35, 1198), Proportion(49, 1203)
    forward, backward = two_proportion_test(a, b), two_proportion_test(b, a)
    assert forward.z == pytest.approx(-backward.z)
    assert forward.p_value == pytest.approx(backward.p_value)


def test_equal_rates_with_no_spread_are_no_difference() -> None:
    """Nobody clicked in either variant: z = 0 and p = 1, not a division by zero."""
    result = two_proportion_test(Proportion(0, 500), Proportion(0, 500))
    assert (result.z, result.p_value) == (0.0, 1.0)


def test_small_samples_are_flagged_as_too_few() -> None:
    """Fewer than 30 sends in a variant, or fewer than 5 clicks expected, says too little."""
    assert not two_proportion_test(Proportion(3, 20), Proportion(9, 20)).enough_data
    assert not two_proportion_test(Proportion(0, 100), Proportion(4, 100)).enough_data
    assert not two_proportion_test(Proportion(0, 0), Proportion(4, 100)).enough_data
    assert two_proportion_test(Proportion(5, 100), Proportion(6, 100)).enough_data


def test_the_verdict_says_which_is_higher_with_sizes_rates_and_p() -> None:
    """The sentence a marketer reads: each rate with its sample size, p, and what it means."""
    text = verdict("click rate", "a", Proportion(100, 1000), "b", Proportion(150, 1000))
    assert text == (
        "b's click rate (15.0% of 1,000) is higher than a's (10.0% of 1,000); p < 0.001:"
        " more than chance at the 5% level"
    )
    text = verdict("click rate", "a", Proportion(56, 100), "b", Proportion(45, 100))
    assert text == (
        "b's click rate (45.0% of 100) is lower than a's (56.0% of 100); p = 0.12:"
        " could be chance; keep the test running"
    )


def test_the_verdict_on_small_samples_asks_to_wait() -> None:
    """Too few sends gives no p-value to misread, just the advice to keep going."""
    text = verdict("unsubscribe rate", "a", Proportion(1, 12), "b", Proportion(0, 11))
    assert text.startswith("b's unsubscribe rate (0.0% of 11) is lower than a's (8.3% of 12):")
    assert "too few to tell yet" in text
    assert "keep the test running" in text
