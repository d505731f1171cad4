"""What lm-eval reports for one task run: every metric it aggregates, and its per-sample records
(`log_samples`), which glan keeps on disk and reads the headline metric's per-item scores from,
so that two models are compared on the same items."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from glan.run.files import atomic_file

ItemKey = tuple[str, int, str]  # (lm-eval task, doc_id, doc_hash): the same item for both
NOT_METRICS = {"name", "alias", "sample_len", " "}


def all_metrics(output: dict[str, Any], task: str) -> dict[str, float]:
    """Every metric lm-eval reports for a task or group, as `name,filter` keys (stderrs left
    out: glan turns lm-eval's off and measures the difference instead)."""
    return {
        key: float(value)
        for key, value in output["results"][task].items()
        if key not in NOT_METRICS
        and "_stderr," not in key
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


def headline(metrics: dict[str, float], metric: str) -> str:
    """The key of the headline metric (`name` or `name,filter`) among a task's metrics."""
    return next(
        k for k in metrics if k == metric or ("," not in metric and k.split(",")[0] == metric)
    )


def _samples(output: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(task, sample) of every task the run holds: a group's subtasks' all."""
    for task, rows in (output.get("samples") or {}).items():
        for row in rows:
            yield task, row


def item_scores(rows: Iterable[tuple[str, dict[str, Any]]], key: str) -> dict[ItemKey, float]:
    """Each item's score on the metric `name,filter`: the value lm-eval recorded for it under
    that filter. Items whose value is not one number (IFEval's instruction-level lists) are
    left out."""
    name, _, filter_name = key.partition(",")
    scores: dict[ItemKey, float] = {}
    for task, row in rows:
        if row.get("filter", "none") != (filter_name or "none") or name not in row:
            continue
        value = row[name]
        if isinstance(value, bool | int | float):
            scores[(task, int(row["doc_id"]), str(row.get("doc_hash", "")))] = float(value)
    return scores


def output_item_scores(output: dict[str, Any], key: str) -> dict[ItemKey, float]:
    return item_scores(_samples(output), key)


def _plain(value: Any) -> Any:
    """numpy numbers and sets as JSON has them; anything else as its text (lm-eval's rule)."""
    if hasattr(value, "item"):
        return value.item()
    return sorted(value) if isinstance(value, set) else str(value)


def write_samples(output: dict[str, Any], path: Path) -> None:
    """lm-eval's per-sample records of a run, one JSON line each with its task added (what
    `lm_eval --log_samples` writes, all subtasks in one file), gzipped: few-shot prompts make
    them large (MMLU's 5-shot: about 11 kB an item)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for task, row in _samples(output):  # a line at a time: never the whole file in memory
            line = json.dumps({"task": task, **row}, default=_plain, ensure_ascii=False)
            gz.write(line.encode() + b"\n")


def read_samples(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            yield row.pop("task"), row


def paired(
    base: dict[ItemKey, float], tuned: dict[ItemKey, float]
) -> tuple[list[float], list[float]]:
    """The two models' scores on the items both were scored on, in one order."""
    shared = sorted(base.keys() & tuned.keys())
    return [base[k] for k in shared], [tuned[k] for k in shared]
