"""Tuned minus base on the same items, with its uncertainty: a paired bootstrap interval,
McNemar's exact test for 0/1 scores, Holm's correction across benchmarks, and the smallest
difference the item count can detect. Pure functions over per-item scores (one number per
item, base and tuned in the same order)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel

ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_ITERS = 10_000
BOOTSTRAP_SEED = 1234
DRAWS_PER_CHUNK = 2_000_000  # numbers drawn at once: bounds memory on large benchmarks

Verdict = Literal["better", "worse", "can't tell"]


class Comparison(BaseModel):
    """One benchmark's paired comparison; differences are tuned - base, as shares (0.05 = 5
    points)."""

    base: str
    tuned: str
    items: int
    base_score: float
    tuned_score: float
    difference: float
    ci_low: float  # 95% paired bootstrap percentile interval of the difference
    ci_high: float
    binary: bool  # every item scored 0 or 1
    base_only: int | None = None  # items only base got right (binary only)
    tuned_only: int | None = None  # items only tuned got right (binary only)
    test: Literal["mcnemar-exact", "paired-bootstrap"]
    p_value: float
    p_holm: float | None = None  # Holm-adjusted across the benchmarks compared
    verdict: Verdict | None = None
    mde: float | None  # smallest difference detectable at 80% power; None: too few items
    bootstrap_iters: int = BOOTSTRAP_ITERS
    bootstrap_seed: int = BOOTSTRAP_SEED


def _draws(diffs: np.ndarray, iters: int, seed: int) -> np.ndarray:
    """Mean difference of `iters` resamples of the items with replacement. Items with equal
    differences are interchangeable, so drawing how many of each value a resample holds
    (multinomial) is the same resampling, and cheap for 0/1 scores (three values)."""
    values, counts = np.unique(diffs, return_counts=True)
    n = len(diffs)
    rng = np.random.default_rng(seed)
    chunk = max(1, DRAWS_PER_CHUNK // len(values))
    means = [
        rng.multinomial(n, counts / n, size=min(chunk, iters - start)) @ values / n
        for start in range(0, iters, chunk)
    ]
    return np.concatenate(means)


def paired_bootstrap(
    base: Sequence[float],
    tuned: Sequence[float],
    iters: int = BOOTSTRAP_ITERS,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float, float]:
    """(difference, interval low, interval high, two-sided bootstrap p-value) of mean(tuned -
    base) over the same items, the interval the resamples' percentiles. The p-value is twice
    the smaller share of resampled differences on either side of 0 (each count plus one)."""
    diffs = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if diffs.size == 0:
        raise ValueError("no items to compare")
    means = _draws(diffs, iters, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    side = min(int((means <= 0).sum()), int((means >= 0).sum()))
    p_value = min(1.0, 2 * (side + 1) / (iters + 1))
    return float(diffs.mean()), float(low), float(high), p_value


def mcnemar_exact(base_only: int, tuned_only: int) -> float:
    """McNemar's exact two-sided p-value: the discordant items (right for one model only) as
    a binomial(b + c, 1/2) under no difference; 1 when there are none."""
    discordant = base_only + tuned_only
    if discordant == 0:
        return 1.0
    smaller = min(base_only, tuned_only)
    term = tail = 1  # C(n, 0), then C(n, k) from C(n, k - 1): exact, and fast for large n
    for k in range(1, smaller + 1):
        term = term * (discordant - k + 1) // k
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: a hypothesis is rejected at
    level alpha when its adjusted p-value is below alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _z(alpha: float, power: float) -> tuple[float, float]:
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)


def mcnemar_mde(
    items: int, discordance: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest difference in accuracy that McNemar's test finds with `power` at `alpha`
    over `items` items (Connor's 1987 sample size, solved for the difference), at the observed
    share of discordant items; a difference of d needs at least a share d of discordant items,
    so the share is taken as at least d. None when no difference up to 1 is detectable."""
    z_a, z_b = _z(alpha, power)

    def needed(d: float) -> float:
        share = max(discordance, d)
        return (z_a * math.sqrt(share) + z_b * math.sqrt(max(share - d * d, 0.0))) ** 2 / d**2

    if items <= 0 or needed(1.0) > items:
        return None
    low, high = 0.0, 1.0  # needed() falls as d grows: bisect for needed(d) == items
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > items else (low, mid)
    return high


def normal_mde(diffs: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float | None:
    """(z_alpha/2 + z_power) x sd of the per-item differences / sqrt(items): the paired
    t-test's minimum detectable effect, for scores that are not 0/1."""
    if len(diffs) < 2:
        return None
    z_a, z_b = _z(alpha, power)
    return (z_a + z_b) * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))


def compare(
    base_label: str,
    tuned_label: str,
    base: Sequence[float],
    tuned: Sequence[float],
    iters: int = BOOTSTRAP_ITERS,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """The paired comparison of two models' per-item scores (same items, same order)."""
    if len(base) != len(tuned):
        raise ValueError(f"{len(base)} base items, {len(tuned)} tuned: not paired")
    difference, low, high, boot_p = paired_bootstrap(base, tuned, iters, seed)
    binary = all(v in (0, 1) for v in (*base, *tuned))
    fields: dict[str, object] = {}
    if binary:
        b = sum(1 for x, y in zip(base, tuned, strict=True) if x == 1 and y == 0)
        c = sum(1 for x, y in zip(base, tuned, strict=True) if x == 0 and y == 1)
        fields = {"base_only": b, "tuned_only": c, "test": "mcnemar-exact"}
        fields |= {
            "p_value": mcnemar_exact(b, c),
            "mde": mcnemar_mde(len(base), (b + c) / len(base)),
        }
    else:
        diffs = [y - x for x, y in zip(base, tuned, strict=True)]
        fields = {"test": "paired-bootstrap", "p_value": boot_p, "mde": normal_mde(diffs)}
    return Comparison(
        base=base_label,
        tuned=tuned_label,
        items=len(base),
        base_score=float(np.mean(base)),
        tuned_score=float(np.mean(tuned)),
        difference=difference,
        ci_low=low,
        ci_high=high,
        binary=binary,
        bootstrap_iters=iters,
        bootstrap_seed=seed,
        **fields,  # type: ignore[arg-type]
    )


def judge(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> None:
    """Holm-adjusts the comparisons' p-values across benchmarks and sets each verdict: better
    or worse where the adjusted p-value is below alpha, else can't tell."""
    for comparison, adjusted in zip(
        comparisons, holm([c.p_value for c in comparisons]), strict=True
    ):
        comparison.p_holm = adjusted
        if adjusted < alpha and comparison.difference != 0:
            comparison.verdict = "better" if comparison.difference > 0 else "worse"
        else:
            comparison.verdict = "can't tell"
