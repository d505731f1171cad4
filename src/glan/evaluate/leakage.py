"""The paper's leakage check: per benchmark, the model's mean loss on test items minus its mean
loss on a same-size sample of its training pairs, both as chat prompt -> answer with the loss on
the answer tokens only (as in training).

Reading: a model tuned on clean data has seen its training pairs and not the test items, so the
test items should not look more familiar than the training data. A gap well below zero (test loss
under training loss) says the test items, or near copies, were learnt: WARN_BELOW."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from glan.evaluate.registry import Benchmark, Doc
from glan.run.files import atomic_write_json
from glan.train.data import Pair, load_pairs
from glan.train.models import require, resolve_model

WARN_BELOW = -0.1  # the paper's clean model: -0.03..+0.02; see README "Leakage check"


class LeakageRow(BaseModel):
    benchmark: str
    status: str  # run, skipped
    reason: str = ""
    items: int = 0
    test_loss: float | None = None
    train_loss: float | None = None
    gap: float | None = None
    warning: bool = False


def doc_pair(bench: Benchmark, doc: Doc) -> tuple[str, str]:
    """A benchmark item as question and reference answer."""
    if bench.kind == "multiple_choice":
        choices = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(doc["choices"]))
        label = doc["label"]
        return f"{doc['question']}\n{choices}", f"{'ABCD'[label]}. {doc['choices'][label]}"
    if bench.kind == "code":
        return doc["prompt"], doc["canonical_solution"]
    return doc["question"], doc["answer"].replace("#### ", "The answer is ")


def answer_loss(model: Any, tokenizer: Any, prompt: list[dict[str, str]], answer: str) -> float:
    """Mean per-token loss on the answer, given the chat-formatted prompt."""
    import torch

    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=False
    )
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :2048]
    labels = ids.clone()
    labels[:, : len(head_ids)] = -100
    with torch.no_grad():
        return float(model(input_ids=ids.to(model.device), labels=labels.to(model.device)).loss)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def check(
    model_name: str,
    train_source: Path,
    benchmarks: list[Benchmark],
    items: int = 100,
    seed: int = 0,
) -> list[LeakageRow]:
    require("eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    pairs: list[Pair] = load_pairs(train_source)
    rng = random.Random(seed)
    rows = []
    for bench in benchmarks:
        docs = bench.docs() if bench.docs else None
        if not docs:
            rows.append(LeakageRow(benchmark=bench.name, status="skipped", reason="no local data"))
            continue
        n = min(items, len(docs), len(pairs))
        test = [doc_pair(bench, d) for d in rng.sample(docs, n)]
        test_loss = _mean(
            [answer_loss(model, tokenizer, [{"role": "user", "content": q}], a) for q, a in test]
        )
        train = rng.sample(pairs, n)
        train_loss = _mean(
            [
                answer_loss(model, tokenizer, p["prompt"], p["completion"][0]["content"])
                for p in train
            ]
        )
        gap = test_loss - train_loss
        rows.append(
            LeakageRow(
                benchmark=bench.name,
                status="run",
                items=n,
                test_loss=test_loss,
                train_loss=train_loss,
                gap=gap,
                warning=gap < WARN_BELOW,
            )
        )
    return rows


def write(rows: list[LeakageRow], out_dir: Path, model: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"model": model, "warn_below": WARN_BELOW, "rows": [r.model_dump() for r in rows]}
    atomic_write_json(out_dir / "leakage.json", payload)
