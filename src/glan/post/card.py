"""The dataset card (README.md) of an export: what the records are, how they were made and
cleaned, which files hold them (the `configs:` block the hub reads), and their caveats."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from glan import __version__
from glan.post.clean import read_records
from glan.post.provenance import RECORDS, records_fingerprint


def _load_json(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


class CardStats:
    """What the card says about the records, counted as they stream past (its size is the
    taxonomy's, not the dataset's)."""

    def __init__(self) -> None:
        self.fields: Counter[str] = Counter()
        self.disciplines: Counter[str] = Counter()
        self.strategies: Counter[str] = Counter()
        self.n = 0

    def add(self, record: dict[str, Any]) -> None:
        meta = record.get("meta") or {}
        self.fields[meta.get("field", "?")] += 1
        self.disciplines[meta.get("discipline", "?")] += 1
        self.strategies[meta.get("strategy", "?")] += 1
        self.n += 1


def _configs(data_files: list[str]) -> list[str]:
    """The card's `configs:` block: the files the hub and `load_dataset(folder)` read as the
    train split, whatever their number."""
    if not data_files:
        return []
    return [
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path:",
        *[f"    - {name}" for name in data_files],
    ]


def dataset_card(
    run_dir: Path,
    src: Path,
    fmt: str,
    cleaning: dict[str, Any],
    stats: CardStats | None = None,
    data_files: list[str] | None = None,
) -> str:
    """A README for the export: what it is, how it was made and cleaned (`cleaning`: the
    current clean summary, {} when the source is the raw records), and its caveats. `stats`:
    counted by the caller's pass over `src` (else counted here); `data_files`: the export's
    files, relative to its folder."""
    manifest = _load_json(run_dir / "manifest.json")
    records = records_fingerprint(run_dir, cleaning) if (run_dir / RECORDS).is_file() else None
    if stats is None:
        stats = CardStats()
        for record in read_records(src):
            stats.add(record)
    fields, disciplines, strategies, n = (
        stats.fields,
        stats.disciplines,
        stats.strategies,
        stats.n,
    )
    cfg = manifest.get("config", {})
    # `usage` and `cost_usd` add up every invocation that worked on the run (resumes included).
    stage_rows = []
    totals = Counter[str]()
    for stage, models in (manifest.get("usage") or {}).items():
        for model, row in models.items():
            stage_rows.append(
                f"| {stage} | {model} | {row['requests']:,} | {row['prompt_tokens']:,} | "
                f"{row['completion_tokens']:,} | ${row['cost_usd']:.4f} |"
            )
            totals.update({k: row[k] for k in ("requests", "prompt_tokens", "completion_tokens")})
    if stage_rows:
        stage_rows.append(
            f"| **total** | | {totals['requests']:,} | {totals['prompt_tokens']:,} | "
            f"{totals['completion_tokens']:,} | ${manifest.get('cost_usd', 0.0):.4f} |"
        )
    made_from = (
        f"Made from `{RECORDS}` sha256 `{records.sha256}` ({records.bytes:,} bytes)."
        if records
        else ""
    )
    lines = [
        "---",
        "license: other",
        "task_categories:\n- text-generation",
        "tags:\n- synthetic\n- instruction-tuning\n- glan",
        *_configs(data_files or []),
        "---",
        "",
        "# GLAN synthetic instruction data",
        "",
        f"{n:,} question-answer pairs made with glan {__version__} by walking a taxonomy of "
        "human knowledge (field > sub-field > discipline > subject > syllabus > class sessions and "
        "key concepts) and asking a model for homework questions and their answers, the method "
        "of Li et al. (2024), *Synthetic Data (Almost) from Scratch: Generalized Instruction "
        "Tuning for Language Models*.",
        "",
        f"Format: `{fmt}`. Source file: `{src.name}`. {made_from}".rstrip(),
        "",
        "## Coverage",
        "",
        f"{len(fields)} fields, {len(disciplines)} disciplines. Sampling strategies: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(strategies.items()))
        + ".",
        "",
        "| field | pairs |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in fields.most_common()],
        "",
        "## How it was made",
        "",
        f"Seed {manifest.get('seed', '?')}, target {manifest.get('target', '?')}, "
        f"glan {manifest.get('glan_version', '?')}, subjects mode `{cfg.get('subjects_mode', '?')}`. "
        "Tokens and cost add up every invocation that worked on the run (resumes included).",
        "",
        "| stage | model | requests | prompt tokens | completion tokens | cost |",
        "|---|---|---:|---:|---:|---:|",
        *stage_rows,
        "",
        "## Cleaning and decontamination",
        "",
    ]
    if cleaning:
        s = cleaning.get("settings", {})
        lines += [
            f"{cleaning.get('input', 0):,} records in, {cleaning.get('kept', 0):,} kept.",
            f"- filtered: {cleaning.get('filtered') or 'none'}",
            f"- duplicates removed (exact; MinHash-LSH at Jaccard {s.get('near_threshold')}): "
            f"{cleaning.get('duplicates') or 'none'}",
            f"- decontaminated against {_benchmarks(cleaning)} by {s.get('ngram')}-gram "
            f"overlap (>= {s.get('min_overlap')} of an item's n-grams): "
            f"{cleaning.get('contaminated') or 'nothing matched'}",
            *[
                f"- not decontaminated against {name}: {why}"
                for name, why in (cleaning.get("benchmarks_missing") or {}).items()
            ],
        ]
    else:
        lines.append("Not cleaned: run `glan clean` before training or reporting benchmark scores.")
    lines += [
        "",
        "## License and caveats",
        "",
        "The text was written by the models named above; their terms of use govern what you may do "
        "with it. Synthetic answers can be wrong: verify before relying on them.",
        "",
    ]
    return "\n".join(lines)


def _benchmarks(cleaning: dict[str, Any]) -> str:
    used = cleaning.get("benchmarks_used") or {}
    return ", ".join(f"{name} ({n:,} items)" for name, n in used.items()) or "no benchmark"
