"""The statistics of `glan eval`'s base-vs-tuned comparison on known cases."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from glan.evaluate.paired import (
    compare,
    holm,
    judge,
    mcnemar_exact,
    mcnemar_mde,
    normal_mde,
    paired_bootstrap,
)


def test_a_planted_difference_is_inside_the_interval_and_zero_is_outside() -> None:
    # 200 items: base right on the first 100, tuned on the first 140: +0.20 exactly.
    base = [1.0] * 100 + [0.0] * 100
    tuned = [1.0] * 140 + [0.0] * 60
    result = compare("base", "tuned", base, tuned)
    assert result.difference == pytest.approx(0.2)
    assert result.ci_low < 0.2 < result.ci_high
    assert result.ci_low > 0
    assert (result.base_only, result.tuned_only) == (0, 40)
    assert result.test == "mcnemar-exact" and result.p_value == pytest.approx(2 * 0.5**40)
    # A resample has at most 200 items: the interval is no wider than the data allow.
    assert result.ci_high - result.ci_low < 0.2


def test_identical_scores_give_an_interval_around_zero_and_mcnemar_p_of_one() -> None:
    scores = [1.0, 0.0, 1.0, 1.0, 0.0] * 8
    result = compare("base", "tuned", scores, list(scores))
    assert result.difference == 0 and result.ci_low <= 0 <= result.ci_high
    assert result.p_value == 1.0
    judge([result])
    assert result.verdict == "can't tell"


def test_the_bootstrap_is_fixed_by_its_seed_and_its_interval_shrinks_with_more_items() -> None:
    base = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    tuned = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert paired_bootstrap(base, tuned, seed=7) == paired_bootstrap(base, tuned, seed=7)
    difference, low, high, _ = paired_bootstrap(base, tuned)
    _, low10, high10, _ = paired_bootstrap(base * 10, tuned * 10)
    assert difference == pytest.approx(0.3)
    assert low <= 0 and high10 - low10 < (high - low) / 2  # 10x items: ~1/sqrt(10) as wide
    assert low10 > 0


def test_mcnemar_exact_matches_the_binomial_test() -> None:
    # 1 item right for base only, 6 for tuned only: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 16/128.
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)  # 5 of 5 one way: still not < 0.05
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert 0 < mcnemar_exact(6000, 7000) < 1e-15  # exact over thousands of items


def test_holm_on_the_textbook_example() -> None:
    # Holm (1979) as in the usual textbook example: four hypotheses at alpha 0.05; the two
    # smallest p-values (0.005 x 4, 0.01 x 3) are rejected, then 0.03 x 2 = 0.06 stops it.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_verdicts_are_holm_corrected_across_benchmarks() -> None:
    worse = compare("base", "tuned", [1.0] * 40, [1.0] * 31 + [0.0] * 9)  # p = 2^-8
    alone = compare("base", "tuned", [0.0] * 40, [1.0] * 6 + [0.0] * 34)  # p = 2^-5 < 0.05
    also = compare("base", "tuned", [0.0] * 60, [1.0] * 6 + [0.0] * 54)  # p = 2^-5 too
    judge([worse, alone, also])
    assert worse.p_holm == pytest.approx(3 * 2**-8) and worse.verdict == "worse"
    for each in (alone, also):  # significant alone, not both among three: 2 x 2^-5 > 0.05
        assert each.p_value < 0.05 and each.p_holm == pytest.approx(2 * 2**-5)
        assert each.difference > 0 and each.verdict == "can't tell"
    judge([alone])
    assert alone.verdict == "better"


def _power_by_enumeration(items: int, share: float, difference: float, alpha: float) -> float:
    """Every (base only, tuned only) count under the multinomial of the three kinds of item,
    weighted by its chance, where McNemar's exact test rejects: the power by definition."""
    tuned_only, base_only, rest = (share + difference) / 2, (share - difference) / 2, 1 - share
    return sum(
        comb(items, b) * comb(items - b, c) * base_only**b * tuned_only**c * rest ** (items - b - c)
        for b in range(items + 1)
        for c in range(items + 1 - b)
        if mcnemar_exact(b, c) < alpha
    )


@pytest.mark.parametrize(
    ("items", "share", "difference", "alpha"),
    [
        (8, 0.722, 0.722, 0.05),
        (20, 0.348, 0.348, 0.05 / 3),
        (30, 0.3, 0.2, 0.05),
        (60, 0.5, 0.2, 0.01),
    ],
)
def test_the_exact_power_is_the_enumerated_one(
    items: int, share: float, difference: float, alpha: float
) -> None:
    from glan.evaluate.paired import mcnemar_power

    expected = _power_by_enumeration(items, share, difference, alpha)
    assert mcnemar_power(items, share, difference, alpha) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("items", "share", "tests"),
    [(8, 0.0, 1), (20, 0.0, 1), (20, 0.0, 3), (30, 0.2, 1), (40, 0.3, 3)],
)
def test_the_detectable_difference_is_found_with_80_percent_power_at_holms_level(
    items: int, share: float, tests: int
) -> None:
    """At alpha / m (the level Holm holds the smallest of m p-values to), the detectable
    difference d has 80% power by enumeration, and d - 0.02 has less."""
    alpha = 0.05 / tests
    d = mcnemar_mde(items, share, alpha)
    assert d is not None
    assert _power_by_enumeration(items, max(share, d), d, alpha) >= 0.8
    below = d - 0.02
    assert _power_by_enumeration(items, max(share, below), below, alpha) < 0.8


def test_the_detectable_difference_follows_the_item_count_and_the_discordance() -> None:
    assert mcnemar_mde(620, 0.2) < mcnemar_mde(155, 0.2) < mcnemar_mde(155, 0.4)
    assert mcnemar_mde(155, 0.2) == pytest.approx(0.10, abs=0.01)  # Connor (1987): ~0.10
    # Five items all one way give p = 2^-4 = 0.0625: no difference is detectable at 0.05;
    # six give 2^-5 < 0.05, but not below 0.05 / 2.
    assert mcnemar_mde(5, 0.0) is None and mcnemar_mde(6, 0.0) is not None
    assert mcnemar_mde(6, 0.0, 0.05 / 2) is None
    result = compare("base", "tuned", [1.0, 0.0] * 5, [1.0, 0.0] * 5)
    assert result.mde == mcnemar_mde(10, 0.0)
    # Judged among three benchmarks, each detectable difference is at 0.05 / 3.
    others = [compare("base", "tuned", [1.0] * 30, [1.0] * 30) for _ in range(2)]
    judge([result, *others])
    assert result.mde == mcnemar_mde(10, 0.0, 0.05 / 3) and result.mde_alpha == 0.05 / 3


def test_scores_that_are_not_zero_or_one_use_the_bootstrap_p_value_and_the_normal_mde() -> None:
    base = [0.5, 0.25, 0.75, 0.5] * 25
    tuned = [b + 0.1 for b in base]
    result = compare("base", "tuned", base, tuned)
    assert not result.binary and result.test == "paired-bootstrap"
    assert result.difference == pytest.approx(0.1) and result.ci_low == pytest.approx(0.1)
    assert result.p_value == pytest.approx(2 / 10_001)  # no resample at or below zero
    assert normal_mde([0.0, 0.2] * 50) == pytest.approx(2.8016 * 0.1005 / 10, rel=1e-3)
    # Every item 0.1 better: no spread to measure, so not 0 but the 0/1 scores' floor.
    assert result.mde == mcnemar_mde(100, 0.0) > 0


def test_scores_that_are_not_numbers_are_not_compared() -> None:
    nan = float("nan")
    with pytest.raises(ValueError, match="not numbers"):
        compare("base", "tuned", [1.0, 0.0, nan] * 10, [1.0, 1.0, nan] * 10)


def test_with_no_difference_the_interval_covers_zero_about_95_times_in_100() -> None:
    """Two models that differ only by chance (each item flipped for tuned with chance 0.2,
    either way): over 300 draws, the 95% interval holds 0 in about 95% of them."""
    rng = np.random.default_rng(0)
    covered = 0
    for draw in range(300):
        base = (rng.random(60) < 0.5).astype(float)
        flip = rng.random(60) < 0.2
        tuned = np.where(flip, 1 - base, base)
        _, low, high, _ = paired_bootstrap(base, tuned, iters=1000, seed=draw)
        covered += low <= 0 <= high
    assert 0.9 <= covered / 300 <= 0.99
