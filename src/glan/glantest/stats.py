"""The numbers of a GLAN-Test report: per-item outcomes and per-row summaries.

An item counts when both orders were judged. Each model's item score is its mean over the two
orders (a preference for a position cancels out); the item's verdict compares those means. The
verdict flips with the order when the judge's verdict with A shown first differs from its
verdict with B shown first (A wins / tie / B wins): the share of such items measures position
bias. Intervals are 95% percentile bootstraps over items, paired (every model is resampled
with the same items), seeded per row so a row's interval does not depend on the other rows;
the sign flips of each comparison are seeded per row and model, so a model's p-value does not
depend on which other models are listed. The reports sort items by id first: the numbers do
not depend on the order the items come in.

A comparison of B with A per row: the mean paired difference B - A with its bootstrap
interval and a two-sided p-value from a sign-flip permutation test on the per-item
differences (exact over all 2^n sign patterns up to EXACT_FLIPS_UP_TO items, else Monte Carlo
with as many draws as bootstrap resamples); and B's win rate (wins + half the ties, over
items) with its bootstrap interval. A row of fewer than MIN_ITEMS_FOR_INTERVAL items has its
means, difference, win rate and p-value but no intervals.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_FLIPS_UP_TO = 12  # 4,096 sign patterns: exact is cheap, and exact at small n matters
# Fewer items get no interval. A percentile bootstrap of n items has few distinct resamples and
# collapses (3 items all +1: [1, 1]) while the exact sign-flip p cannot fall below 2/2^n (0.25
# on 3 items; under 0.05 only from 6): the two would contradict each other. From 10 items p can
# reach 0.002 and the resamples number in the tens of thousands.
MIN_ITEMS_FOR_INTERVAL = 10
NO_INTERVAL = f"n<{MIN_ITEMS_FOR_INTERVAL}"  # what a row without intervals says, in every form


@dataclass(frozen=True)
class Outcome:
    a: float  # model A's mean score over both orders
    b: float
    verdict: str  # label of the winner, or "tie"
    flipped: bool


def _verdict(a: float, b: float, labels: tuple[str, str]) -> str:
    return labels[0] if a > b else labels[1] if b > a else "tie"


def outcome(record: dict[str, Any], pair: tuple[str, str]) -> Outcome | None:
    """The item's outcome, or None when an order has no scores (it is reported, not scored)."""
    by_order = {j["order"]: j["scores"] for j in record.get("judgments", []) if j.get("scores")}
    if set(by_order) != {"AB", "BA"}:
        return None
    a, b = pair
    ab, ba = by_order["AB"], by_order["BA"]
    mean_a, mean_b = (ab[a] + ba[a]) / 2, (ab[b] + ba[b]) / 2
    flipped = _verdict(ab[a], ab[b], pair) != _verdict(ba[a], ba[b], pair)
    return Outcome(mean_a, mean_b, _verdict(mean_a, mean_b, pair), flipped)


def _row_seed(seed: int, name: str, label: str | None = None) -> np.random.Generator:
    key = f"{seed}|{name}" if label is None else f"{seed}|{name}|{label}"
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _interval(samples: np.ndarray | None) -> list[float] | None:
    """The 95% percentile interval of the resampled statistic; None without resamples."""
    if samples is None:
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def sign_flip_p(diffs: np.ndarray, rng: np.random.Generator, draws: int) -> float:
    """Two-sided p-value of a mean difference of 0: under the null, each item's difference is
    as likely with either sign (the two models are exchangeable within an item), so the
    observed |mean| is ranked among the |means| of the differences with their signs flipped."""
    n = len(diffs)
    observed = abs(diffs.mean())
    if n <= EXACT_FLIPS_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        flipped = np.abs((signs * diffs).mean(axis=1))
        # Tolerance: the same |mean| reached by another sign pattern must count as as extreme.
        return round(float(np.mean(flipped >= observed - 1e-12)), 4)
    signs = rng.choice((1.0, -1.0), size=(draws, n))
    flipped = np.abs((signs * diffs).mean(axis=1))
    # The observed pattern counts as one of the draws: p is never 0 (Phipson & Smyth).
    return round(float((1 + np.sum(flipped >= observed - 1e-12)) / (draws + 1)), 4)


def _resampled(values: np.ndarray, picks: np.ndarray | None) -> np.ndarray | None:
    return None if picks is None else values[picks].mean(axis=1)


def compare(
    base: np.ndarray,
    other: np.ndarray,
    picks: np.ndarray | None,
    rng: np.random.Generator,
    draws: int,
) -> dict[str, Any]:
    """`other` against `base` on the same items: the paired difference other - base with its
    interval and p-value, and other's win rate (ties count half) with its interval. `picks`
    are the row's bootstrap resamples of item indices, shared with the means (paired), or
    None when the row is too small for intervals; `draws`: sign patterns beyond exact."""
    diffs = other - base
    wins = np.where(other > base, 1.0, np.where(other < base, 0.0, 0.5))
    return {
        "difference": {
            "mean": round(float(diffs.mean()), 4),
            "ci95": _interval(_resampled(diffs, picks)),
            "p_value": sign_flip_p(diffs, rng, draws),
        },
        "win_rate": {
            "value": round(float(wins.mean()), 4),
            "ci95": _interval(_resampled(wins, picks)),
        },
    }


def score_rows(
    scores: np.ndarray, labels: list[str], name: str, resamples: int, seed: int
) -> dict[str, Any]:
    """Per-model means with intervals for a (items x models) score matrix, and each later
    model compared with the first (the baseline), all on the same resampled items. Under
    MIN_ITEMS_FOR_INTERVAL items: no intervals (None), and `no_interval` says so."""
    rng = _row_seed(seed, name)
    small = len(scores) < MIN_ITEMS_FOR_INTERVAL
    picks = None if small else rng.integers(0, len(scores), size=(resamples, len(scores)))
    means = _resampled(scores, picks)  # (resamples, models): paired resampling
    row: dict[str, Any] = {
        "mean": {k: round(float(scores[:, i].mean()), 4) for i, k in enumerate(labels)},
        "ci95": None
        if means is None
        else {k: _interval(means[:, i]) for i, k in enumerate(labels)},
        "against_baseline": {
            # Its own sign flips: a model's p does not move when another model is listed.
            k: compare(scores[:, 0], scores[:, i], picks, _row_seed(seed, name, k), resamples)
            for i, k in enumerate(labels)
            if i > 0
        },
    }
    if small:
        row["no_interval"] = NO_INTERVAL
    return row


def summarise(
    outcomes: list[Outcome], pair: tuple[str, str], name: str, resamples: int, seed: int
) -> dict[str, Any]:
    a, b = pair
    n = len(outcomes)
    row: dict[str, Any] = {"items": n}
    if n == 0:
        return {
            **row,
            "mean": None,
            "ci95": None,
            "difference": None,
            "win_rate": None,
            "wins": None,
            "flips": 0,
            "flip_rate": None,
        }
    scores = np.array([[o.a, o.b] for o in outcomes])
    summary = score_rows(scores, [a, b], name, resamples, seed)
    flips = sum(o.flipped for o in outcomes)
    return {
        **row,
        "mean": summary["mean"],
        "ci95": summary["ci95"],
        **({"no_interval": NO_INTERVAL} if "no_interval" in summary else {}),
        **summary["against_baseline"][b],  # B - A, and B's win rate
        "wins": {k: sum(o.verdict == k for o in outcomes) for k in (a, "tie", b)},
        "flips": flips,
        "flip_rate": round(flips / n, 4),
    }
