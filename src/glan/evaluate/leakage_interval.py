"""The leakage test's uncertainty: a bootstrap interval on each gap (mean test loss - mean train
loss) and on each model's shift from the reference model's gap.

The test items and the train items are two independent samples, so each resample draws N test
items and N train items independently, with replacement. Every model is scored on the same
items, so one set of draws serves all the models of a benchmark: a shift (model's gap - the
reference's gap) is resampled paired, and the item-to-item spread the two models share cancels
out of it. Pure functions over per-item losses; the draws come from a fixed, recorded seed and
the benchmark's name, so a benchmark's intervals do not depend on which others ran with it."""

from __future__ import annotations

import zlib

import numpy as np

BOOTSTRAP_ITERS = 10_000
BOOTSTRAP_SEED = 30
LEVEL = 0.95
VALUES_PER_CHUNK = 4_000_000  # losses gathered at once: bounds memory on large samples


def resampled_gaps(
    test: np.ndarray, train: np.ndarray, iters: int, rng: np.random.Generator
) -> np.ndarray:
    """(models, iters) gaps of resamples: `test` is (models, test items) losses, `train`
    (models, train items); item columns are drawn the same for every model."""
    models, n_test = test.shape
    n_train = train.shape[1]
    chunk = max(1, VALUES_PER_CHUNK // (models * max(n_test, n_train)))
    parts = []
    for start in range(0, iters, chunk):
        size = min(chunk, iters - start)
        test_cols = rng.integers(0, n_test, size=(size, n_test))
        train_cols = rng.integers(0, n_train, size=(size, n_train))
        parts.append(test[:, test_cols].mean(axis=2) - train[:, train_cols].mean(axis=2))
    return np.concatenate(parts, axis=1)


class GapIntervals:
    """The percentile intervals of one benchmark's gaps and shifts, models in row order."""

    def __init__(
        self,
        benchmark: str,
        test: list[list[float]],
        train: list[list[float]],
        iters: int = BOOTSTRAP_ITERS,
        seed: int = BOOTSTRAP_SEED,
        level: float = LEVEL,
    ) -> None:
        rng = np.random.default_rng([seed, zlib.crc32(benchmark.encode())])
        self.gaps = resampled_gaps(np.asarray(test, float), np.asarray(train, float), iters, rng)
        self.tails = ((1 - level) / 2, (1 + level) / 2)

    def gap(self, model: int) -> tuple[float, float]:
        low, high = np.quantile(self.gaps[model], self.tails)
        return float(low), float(high)

    def shift(self, model: int, reference: int) -> tuple[float, float]:
        """The interval of the model's gap minus the reference's, on the same resamples."""
        low, high = np.quantile(self.gaps[model] - self.gaps[reference], self.tails)
        return float(low), float(high)
