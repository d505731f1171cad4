"""The numbers of a GLAN-Test report: per-item outcomes and per-row summaries.

An item counts when both orders were judged. Each model's item score is its mean over the two
orders (a preference for a position cancels out); the item's verdict compares those means. The
verdict flips with the order when the judge's verdict with A shown first differs from its
verdict with B shown first (A wins / tie / B wins): the share of such items measures position
bias. Intervals are 95% percentile bootstraps over items, paired (both models are resampled
with the same items), seeded per row so a row's interval does not depend on the other rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


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


def _row_seed(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def summarise(
    outcomes: list[Outcome], pair: tuple[str, str], name: str, resamples: int, seed: int
) -> dict[str, Any]:
    a, b = pair
    n = len(outcomes)
    row: dict[str, Any] = {"items": n}
    if n == 0:
        return {**row, "mean": None, "ci95": None, "wins": None, "flips": 0, "flip_rate": None}
    scores = np.array([[o.a, o.b] for o in outcomes])
    picks = _row_seed(seed, name).integers(0, n, size=(resamples, n))
    means = scores[picks].mean(axis=1)  # (resamples, 2): paired resampling
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    flips = sum(o.flipped for o in outcomes)
    return {
        **row,
        "mean": {a: round(float(scores[:, 0].mean()), 4), b: round(float(scores[:, 1].mean()), 4)},
        "ci95": {
            a: [round(float(lo[0]), 4), round(float(hi[0]), 4)],
            b: [round(float(lo[1]), 4), round(float(hi[1]), 4)],
        },
        "wins": {k: sum(o.verdict == k for o in outcomes) for k in (a, "tie", b)},
        "flips": flips,
        "flip_rate": round(flips / n, 4),
    }
