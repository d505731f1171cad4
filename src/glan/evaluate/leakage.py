"""The paper's leakage test (after Skywork): per benchmark, the model's mean loss on N items of the
benchmark's test split minus its mean loss on N items of the SAME benchmark's training split,
same formatting, same N, loss on the answer tokens only, for base and tuned models.

Reading (docs/train-eval.md): a gap near zero says the model was not fitted to that task; a
large positive gap (train items far likelier than test items) says the benchmark's training
split, or task-specific in-domain data like it, reached training; a large negative gap says its
test items did. The paper's GLAN model: -0.03 ARC-C, +0.02 GSM8K. The first model given is the
reference. Each gap has a bootstrap interval (glan.evaluate.leakage_interval); so has each
model's shift from the reference's gap (for the reference, or a lone model: its gap itself). A
row is flagged when the shift's whole interval lies past WARN_SHIFT either way, read as near
when the whole interval lies within it, and as can't tell otherwise (too few items to say).

A second, differently named view ("glan pairs") sets the test loss beside the loss on the
model's own tuning pairs: it tells how far the benchmark is from the tuning data, not leakage."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from glan.evaluate.answer_loss import (
    BATCH_SIZE,
    answer_loss,  # the one-item form, re-exported: tests import it from here
    answer_losses,
    device_and_dtype,
    free_memory,
    load,
)
from glan.evaluate.leakage_interval import BOOTSTRAP_ITERS, BOOTSTRAP_SEED, LEVEL, GapIntervals
from glan.evaluate.progress import LOADING, EvalSteps
from glan.evaluate.splits import SPLITS, Doc, Splits, how_to_get, test_docs
from glan.post.progress import Step
from glan.run.files import atomic_write_json
from glan.train.data import Pair, load_pairs
from glan.train.models import require

__all__ = ["answer_loss", "check", "pairs_view", "samples", "write"]

WARN_SHIFT = 0.1  # nats; ten times the paper's clean gaps (-0.03..+0.02)


class LeakageRow(BaseModel):
    benchmark: str
    model: str  # label
    status: str  # run, skipped
    reason: str = ""
    items: int = 0
    train_split: str = "train"  # the split that stood in for training data
    train_source: str = ""  # where it came from: a package, or "user file PATH"
    test_loss: float | None = None
    train_loss: float | None = None
    gap: float | None = None  # test loss - train loss
    gap_pct: float | None = None  # gap as % of the train loss
    gap_low: float | None = None  # the gap's bootstrap interval (LEVEL)
    gap_high: float | None = None
    shift: float | None = None  # gap - the reference's gap; the reference's own: its gap
    shift_low: float | None = None  # the shift's bootstrap interval (paired with the reference)
    shift_high: float | None = None
    reading: str = ""  # flagged, near, can't tell
    warning: str = ""  # empty when nothing to flag
    test_losses: list[float] = []  # per item, in the drawn order: the interval's input
    train_losses: list[float] = []


def doc_pair(doc: Doc) -> tuple[str, str]:
    """A benchmark item as question and reference answer, one format for both splits."""
    if "choices" in doc:
        letters = string.ascii_uppercase
        choices = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(doc["choices"]))
        label = doc["label"]
        return f"{doc['question']}\n{choices}", f"{letters[label]}. {doc['choices'][label]}"
    if "canonical_solution" in doc:
        return doc["prompt"], doc["canonical_solution"]
    return doc["question"], doc["answer"].replace("#### ", "The answer is ")


def _doc_losses(
    model: Any, tokenizer: Any, docs: list[Doc], batch_size: int, step: Step | None = None
) -> list[float]:
    items = [([{"role": "user", "content": q}], a) for q, a in map(doc_pair, docs)]
    return answer_losses(model, tokenizer, items, batch_size, step)


def samples(splits: Splits, items: int, seed: int) -> tuple[list[Doc], list[Doc]] | str:
    """The same number of test and train docs, or why there are none."""
    if splits.missing:
        return splits.missing
    test = splits.test() if splits.test else None
    train = splits.train() if splits.train else None
    if not test or not train:
        return how_to_get(splits.name)
    n = min(items, len(test), len(train))
    rng = random.Random(seed)
    return rng.sample(test, n), rng.sample(train, n)


def check(
    models: dict[str, str],
    benchmarks: list[str | Splits],
    items: int = 100,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    steps: EvalSteps | None = None,
) -> list[LeakageRow]:
    """Rows per benchmark and model (models in the order given; the first is the reference).
    Every model is scored on the same drawn items, one model loaded at a time (each freed
    before the next loads); `steps` hears each model's loading and each benchmark's scoring."""
    require("eval")
    chosen = [
        SPLITS.get(b, Splits(b, missing="unknown")) if isinstance(b, str) else b for b in benchmarks
    ]
    drawn = {s.name: samples(s, items, seed) for s in chosen}
    steps = steps if steps is not None else EvalSteps()
    steps.plan("leakage", list(models), [n for n, d in drawn.items() if not isinstance(d, str)])
    rows: list[LeakageRow] = []
    for label, name in models.items():
        with steps.step("leakage", label, LOADING, unit=""):
            model, tokenizer = load(name)
        for splits in chosen:
            sample = drawn[splits.name]
            row = LeakageRow(benchmark=splits.name, model=label, status="skipped")
            row.train_split, row.train_source = splits.train_split, splits.train_source
            if isinstance(sample, str):
                row.reason = sample
            else:
                test, train = sample
                row.status, row.items = "run", len(test)
                with steps.step("leakage", label, splits.name, 2 * len(test), "items") as step:
                    row.test_losses = _doc_losses(model, tokenizer, test, batch_size, step)
                    row.train_losses = _doc_losses(model, tokenizer, train, batch_size, step)
                row.test_loss = sum(row.test_losses) / len(test)
                row.train_loss = sum(row.train_losses) / len(train)
                row.gap = row.test_loss - row.train_loss
                row.gap_pct = 100 * row.gap / row.train_loss if row.train_loss else None
            rows.append(row)
        del model, tokenizer  # the next model loads only once this one is gone
        free_memory()
    reference = next(iter(models))
    for splits in chosen:
        _intervals([r for r in rows if r.benchmark == splits.name], reference)
    _flag(rows)
    return rows


def _intervals(rows: list[LeakageRow], reference: str) -> None:
    """One benchmark's gap and shift intervals, from the same resamples for every model."""
    run = [r for r in rows if r.gap is not None]
    if not run:
        return
    stats = GapIntervals(
        run[0].benchmark, [r.test_losses for r in run], [r.train_losses for r in run]
    )
    ref = next((i for i, r in enumerate(run) if r.model == reference), 0)
    for i, row in enumerate(run):
        assert row.gap is not None
        row.gap_low, row.gap_high = stats.gap(i)
        if i == ref:
            row.shift, row.shift_low, row.shift_high = row.gap, row.gap_low, row.gap_high
        else:
            row.shift = row.gap - (run[ref].gap or 0.0)
            row.shift_low, row.shift_high = stats.shift(i, ref)


def _flag(rows: list[LeakageRow]) -> None:
    """Flagged only where the shift's whole interval is past WARN_SHIFT; near where it lies
    within; else can't tell."""
    for row in rows:
        if row.shift is None or row.shift_low is None or row.shift_high is None:
            continue
        span = f"{row.shift:+.2f}, interval {row.shift_low:+.2f}..{row.shift_high:+.2f}"
        if row.shift_low > WARN_SHIFT:
            row.reading = "flagged"
            row.warning = f"train split far likelier ({span}): fitted to in-domain data"
        elif row.shift_high < -WARN_SHIFT:
            row.reading = "flagged"
            row.warning = f"test items far likelier ({span}): test items look learnt"
        elif row.shift_low >= -WARN_SHIFT and row.shift_high <= WARN_SHIFT:
            row.reading = "near"
        else:
            row.reading = "can't tell"


class PairsRow(BaseModel):
    """The second view: benchmark test items against the model's own tuning pairs."""

    benchmark: str
    status: str
    reason: str = ""
    items: int = 0
    test_loss: float | None = None
    pairs_loss: float | None = None
    difference: float | None = None


def pairs_view(
    model_name: str,
    train_source: Path,
    benchmarks: list[str],
    items: int = 100,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    steps: EvalSteps | None = None,
) -> list[PairsRow]:
    """Test loss minus loss on a same-size sample of the tuning pairs. Positive for any tuned
    model by construction (it has seen its pairs): how far each benchmark lies from the tuning
    data, not leakage."""
    require("eval")
    steps = steps if steps is not None else EvalSteps()
    steps.plan("pairs view", ["tuned"], benchmarks)
    with steps.step("pairs view", "tuned", LOADING, unit=""):
        model, tokenizer = load(model_name)
    pairs: list[Pair] = load_pairs(train_source)
    rng = random.Random(seed)
    rows = []
    for name in benchmarks:
        test = test_docs(name)
        if not test:
            reason = "no local test items with reference answers"
            rows.append(PairsRow(benchmark=name, status="skipped", reason=reason))
            continue
        n = min(items, len(test), len(pairs))
        with steps.step("pairs view", "tuned", name, 2 * n, "items") as step:
            test_loss = sum(_doc_losses(model, tokenizer, rng.sample(test, n), batch_size, step))
            tuning = [(p["prompt"], p["completion"][0]["content"]) for p in rng.sample(pairs, n)]
            pairs_loss = sum(answer_losses(model, tokenizer, tuning, batch_size, step)) / n
        test_loss /= n
        rows.append(
            PairsRow(
                benchmark=name,
                status="run",
                items=n,
                test_loss=test_loss,
                pairs_loss=pairs_loss,
                difference=test_loss - pairs_loss,
            )
        )
    return rows


def write(
    rows: list[LeakageRow],
    pairs: list[PairsRow],
    out_dir: Path,
    models: dict[str, str],
    batch_size: int = BATCH_SIZE,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    device, dtype = device_and_dtype()
    payload = {
        "models": models,
        "warn_shift": WARN_SHIFT,
        "scoring": {"device": device, "dtype": str(dtype), "batch_size": batch_size},
        "bootstrap": {
            "iters": BOOTSTRAP_ITERS,
            "seed": BOOTSTRAP_SEED,
            "level": LEVEL,
            "resampling": "test and train items independently, the same draws for every model",
        },
        "rows": [r.model_dump() for r in rows],
        "glan_pairs_view": [r.model_dump() for r in pairs],
    }
    atomic_write_json(out_dir / "leakage.json", payload)
