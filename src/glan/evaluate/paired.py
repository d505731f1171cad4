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
    mde_alpha: float = ALPHA  # the level mde is for: alpha / benchmarks compared, once judged
    difference_sd: float | None = None  # sd of the per-item differences (scores not 0/1)
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


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])


def _binomial_cdfs(ks: np.ndarray, q: float, log_fact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(Bin(k, q) <= j) for each k in `ks`, over a window of j around k*q twelve standard
    deviations wide each way (beyond it the mass is below 1e-30): (each row's first j, the
    cumulative sums, one row per k)."""
    q = min(q, 1 - 1e-12)  # q = 1 (every discordant item one way) as its limit
    half = int(np.ceil(12 * math.sqrt(float(ks.max()) * q * (1 - q)))) + 12
    start = np.maximum(0, np.floor(ks * q).astype(int) - half)
    j = start[:, None] + np.arange(2 * half + 1)[None, :]
    inside = j <= ks[:, None]
    j = np.minimum(j, ks[:, None])
    log_pmf = log_fact[ks][:, None] - log_fact[j] - log_fact[ks[:, None] - j]
    log_pmf += j * math.log(q) + (ks[:, None] - j) * math.log(1 - q)
    return start, np.cumsum(np.where(inside, np.exp(log_pmf), 0.0), axis=1)


def _cdf_at(start: np.ndarray, cdfs: np.ndarray, x: np.ndarray) -> np.ndarray:
    column = np.clip(x - start, 0, cdfs.shape[1] - 1)
    return np.where(x < start, 0.0, cdfs[np.arange(len(x)), column])


def mcnemar_power(items: int, discordance: float, difference: float, alpha: float) -> float:
    """The exact power of McNemar's exact test at level `alpha` over `items` items when a share
    `discordance` of them is right for one model only and tuned - base is `difference`: the
    discordant count is binomial(items, discordance), and given k of them, the tuned-only count
    binomial(k, (1 + difference / discordance) / 2); summed over k, the chance the test's
    p-value falls below `alpha`."""
    log_fact = _log_factorials(items)
    k_start, k_cdfs = _binomial_cdfs(np.array([items]), discordance, log_fact)
    pmf = np.diff(k_cdfs[0], prepend=0.0)
    ks = k_start[0] + np.nonzero(pmf > 1e-30)[0]
    ks, weights = ks[ks > 0], pmf[ks[ks > 0] - k_start[0]]
    if ks.size == 0:
        return 0.0
    # Under no difference: the largest count t with 2 P(Bin(k, 1/2) <= t) < alpha rejects
    # min(b, c) <= t (t = start - 1: none does).
    null_start, null_cdfs = _binomial_cdfs(ks, 0.5, log_fact)
    critical = null_start + (2 * null_cdfs < alpha).sum(axis=1) - 1
    start, cdfs = _binomial_cdfs(ks, (1 + difference / discordance) / 2, log_fact)
    low = _cdf_at(start, cdfs, critical)
    high = 1 - _cdf_at(start, cdfs, ks - critical - 1)
    reject = np.where(critical >= 0, low + high, 0.0)
    return float(np.clip((weights * reject).sum(), 0.0, 1.0))


def mcnemar_mde(
    items: int,
    discordance: float,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float | None:
    """The smallest difference in accuracy that McNemar's exact test finds with `power` at
    level `alpha` over `items` items (exact power: mcnemar_power), at the observed share of
    discordant items; a difference of d needs at least a share d of discordant items, so the
    share is taken as at least d. None when no difference can be found: even every item right
    for one model only gives p = 2 x 0.5^items, not below `alpha`."""
    if items <= 0 or 2 * 0.5**items >= alpha:
        return None

    def found(d: float) -> bool:
        return mcnemar_power(items, max(discordance, d), d, alpha) >= power

    low, high = 0.0, 1.0  # power rises with d (up to the test's discreteness): bisect
    for _ in range(24):  # to 1e-7
        mid = (low + high) / 2
        low, high = (low, mid) if found(mid) else (mid, high)
    return high


def normal_mde(diffs: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float | None:
    """(z_alpha/2 + z_power) x sd of the per-item differences / sqrt(items): the paired
    t-test's minimum detectable effect, for scores that are not 0/1. Where every item differs
    by the same amount the spread measures no noise: the 0/1 scores' floor applies (as if the
    models agreed on every item)."""
    if len(diffs) < 2:
        return None
    return _spread_mde(float(np.std(diffs, ddof=1)), len(diffs), alpha, power)


def _spread_mde(spread: float, items: int, alpha: float, power: float = POWER) -> float | None:
    if math.isclose(spread, 0.0, abs_tol=1e-12):
        return mcnemar_mde(items, 0.0, alpha, power)
    z_a, z_b = _z(alpha, power)
    return (z_a + z_b) * spread / math.sqrt(items)


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
    if not all(math.isfinite(v) for v in (*base, *tuned)):
        raise ValueError("item scores that are not numbers (NaN or infinite): not compared")
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
        fields["difference_sd"] = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None
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


def detectable(comparison: Comparison, alpha: float) -> float | None:
    """The comparison's smallest detectable difference at level `alpha`."""
    c = comparison
    if c.binary:
        return mcnemar_mde(c.items, ((c.base_only or 0) + (c.tuned_only or 0)) / c.items, alpha)
    return None if c.difference_sd is None else _spread_mde(c.difference_sd, c.items, alpha)


def judge(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> None:
    """Holm-adjusts the comparisons' p-values across benchmarks and sets each verdict: better
    or worse where the adjusted p-value is below alpha, else can't tell. The detectable
    difference is taken at alpha / m (m tests): the level Holm holds the smallest p-value to,
    so none is found below it."""
    level = alpha / max(1, len(comparisons))
    for comparison, adjusted in zip(
        comparisons, holm([c.p_value for c in comparisons]), strict=True
    ):
        comparison.p_holm = adjusted
        comparison.mde, comparison.mde_alpha = detectable(comparison, level), level
        if adjusted < alpha and comparison.difference != 0:
            comparison.verdict = "better" if comparison.difference > 0 else "worse"
        else:
            comparison.verdict = "can't tell"
