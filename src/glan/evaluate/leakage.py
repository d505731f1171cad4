"""The paper's leakage test (after Skywork): per benchmark, the model's mean loss on N items of the
benchmark's test split minus its mean loss on N items of the SAME benchmark's training split,
same formatting, same N, loss on the answer tokens only, for base and tuned models.

Reading (docs/train-eval.md): a gap near zero says the model was not fitted to that task; a
large positive gap (train items far likelier than test items) says the benchmark's training
split, or task-specific in-domain data like it, reached training; a large negative gap says its
test items did. The paper's GLAN model: -0.03 ARC-C, +0.02 GSM8K. The first model given is the
reference: the others are flagged when their gap moves more than WARN_SHIFT from its gap (a
base model's own gap reflects how the two splits differ); the reference (or a lone model) is
flagged when its own gap is past WARN_SHIFT.

A second, differently named view ("glan pairs") sets the test loss beside the loss on the
model's own tuning pairs: it tells how far the benchmark is from the tuning data, not leakage."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from glan.evaluate.splits import SPLITS, Doc, Splits, how_to_get
from glan.run.files import atomic_write_json
from glan.train.data import Pair, load_pairs
from glan.train.models import require, resolve_model

WARN_SHIFT = 0.1  # nats; ten times the paper's clean gaps (-0.03..+0.02)
MAX_TOKENS = 2048


class LeakageRow(BaseModel):
    benchmark: str
    model: str  # label
    status: str  # run, skipped
    reason: str = ""
    items: int = 0
    train_split: str = "train"
    test_loss: float | None = None
    train_loss: float | None = None
    gap: float | None = None  # test loss - train loss
    gap_pct: float | None = None  # gap as % of the train loss
    warning: str = ""  # empty when nothing to flag


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


def answer_loss(model: Any, tokenizer: Any, prompt: list[dict[str, str]], answer: str) -> float:
    """Mean per-token loss on the answer given the prompt: in the model's chat template when it
    has one, else as plain "Question: ...\\nAnswer: ..." text."""
    import torch

    if tokenizer.chat_template:
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
    else:
        head = "Question: " + "\n".join(m["content"] for m in prompt) + "\nAnswer:"
        full = f"{head} {answer}"
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = ids[:, :MAX_TOKENS]
    labels = ids.clone()
    labels[:, : len(head_ids)] = -100
    with torch.no_grad():
        return float(model(input_ids=ids.to(model.device), labels=labels.to(model.device)).loss)


def _mean_loss(model: Any, tokenizer: Any, docs: list[Doc]) -> float:
    losses = []
    for doc in docs:
        question, answer = doc_pair(doc)
        losses.append(
            answer_loss(model, tokenizer, [{"role": "user", "content": question}], answer)
        )
    return sum(losses) / len(losses)


def _load(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def samples(splits: Splits, items: int, seed: int) -> tuple[list[Doc], list[Doc]] | str:
    """The same number of test and train docs, or why there are none."""
    if splits.missing:
        return splits.missing
    test = splits.test() if splits.test else None
    train = splits.train() if splits.train else None
    if not test or not train:
        return how_to_get()
    n = min(items, len(test), len(train))
    rng = random.Random(seed)
    return rng.sample(test, n), rng.sample(train, n)


def check(
    models: dict[str, str], benchmarks: list[str | Splits], items: int = 100, seed: int = 0
) -> list[LeakageRow]:
    """Rows per benchmark and model (models in the order given; the first is the reference)."""
    require("eval")
    chosen = [
        SPLITS.get(b, Splits(b, missing="unknown")) if isinstance(b, str) else b for b in benchmarks
    ]
    drawn = {s.name: samples(s, items, seed) for s in chosen}
    rows: list[LeakageRow] = []
    for label, name in models.items():
        model, tokenizer = _load(name)
        for splits in chosen:
            sample = drawn[splits.name]
            row = LeakageRow(benchmark=splits.name, model=label, status="skipped")
            row.train_split = splits.train_split
            if isinstance(sample, str):
                row.reason = sample
            else:
                test, train = sample
                row.status, row.items = "run", len(test)
                row.test_loss = _mean_loss(model, tokenizer, test)
                row.train_loss = _mean_loss(model, tokenizer, train)
                row.gap = row.test_loss - row.train_loss
                row.gap_pct = 100 * row.gap / row.train_loss if row.train_loss else None
            rows.append(row)
        del model
    _flag(rows, next(iter(models)))
    return rows


def _flag(rows: list[LeakageRow], reference: str) -> None:
    base = {r.benchmark: r.gap for r in rows if r.model == reference and r.gap is not None}
    for row in rows:
        if row.gap is None:
            continue
        against = base.get(row.benchmark) if row.model != reference else None
        shift = row.gap - (against or 0.0)
        if shift > WARN_SHIFT:
            row.warning = f"train split far likelier ({shift:+.2f}): fitted to in-domain data"
        elif shift < -WARN_SHIFT:
            row.warning = f"test items far likelier ({shift:+.2f}): test items look learnt"


class PairsRow(BaseModel):
    """The second view: benchmark test items against the model's own tuning pairs."""

    benchmark: str
    status: str
    reason: str = ""
    items: int = 0
    test_loss: float | None = None
    pairs_loss: float | None = None
    difference: float | None = None


def _test_docs(name: str) -> list[Doc] | None:
    """The benchmark's test items: from the leakage splits, else glan eval's local copy."""
    from glan.evaluate.registry import BENCHMARKS

    splits = SPLITS.get(name)
    if splits and splits.test and (docs := splits.test()):
        return docs
    bench = BENCHMARKS.get(name)
    if bench is None or bench.docs is None or bench.kind == "instructions":
        return None  # IFEval items have no reference answer
    return bench.docs()


def pairs_view(
    model_name: str, train_source: Path, benchmarks: list[str], items: int = 100, seed: int = 0
) -> list[PairsRow]:
    """Test loss minus loss on a same-size sample of the tuning pairs. Positive for any tuned
    model by construction (it has seen its pairs): how far each benchmark lies from the tuning
    data, not leakage."""
    require("eval")
    model, tokenizer = _load(model_name)
    pairs: list[Pair] = load_pairs(train_source)
    rng = random.Random(seed)
    rows = []
    for name in benchmarks:
        test = _test_docs(name)
        if not test:
            reason = "no local test items with reference answers"
            rows.append(PairsRow(benchmark=name, status="skipped", reason=reason))
            continue
        n = min(items, len(test), len(pairs))
        test_loss = _mean_loss(model, tokenizer, rng.sample(test, n))
        pairs_loss = (
            sum(
                answer_loss(model, tokenizer, p["prompt"], p["completion"][0]["content"])
                for p in rng.sample(pairs, n)
            )
            / n
        )
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
    rows: list[LeakageRow], pairs: list[PairsRow], out_dir: Path, models: dict[str, str]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "models": models,
        "warn_shift": WARN_SHIFT,
        "rows": [r.model_dump() for r in rows],
        "glan_pairs_view": [r.model_dump() for r in pairs],
    }
    atomic_write_json(out_dir / "leakage.json", payload)
