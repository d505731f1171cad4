"""Export a run to the format a trainer reads, with a dataset card next to it.

Formats: `messages` (chat JSONL, what TRL's SFTTrainer and most chat trainers read), `alpaca`
(instruction/input/output), `sharegpt` (conversations with from/value), `parquet`, and `hf` (a
Hugging Face dataset saved with save_to_disk). `push_to_hub` uploads the export folder, card
included, as a dataset repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from glan.errors import UserError
from glan.post.clean import read_records
from glan.runstate import atomic_write_bytes, atomic_write_text

Format = Literal["messages", "alpaca", "sharegpt", "parquet", "hf"]
FORMATS: tuple[str, ...] = ("messages", "alpaca", "sharegpt", "parquet", "hf")


def source_file(run_dir: Path) -> Path:
    """The cleaned records when `glan clean` has run, else the raw ones."""
    for name in ("clean.jsonl", "instructions.jsonl"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(f"{run_dir} holds neither clean.jsonl nor instructions.jsonl")


def _turns(record: dict[str, Any]) -> tuple[str, str]:
    messages = record.get("messages") or []
    question = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answer = next((m["content"] for m in messages if m.get("role") == "assistant"), "")
    return question, answer


def convert(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    question, answer = _turns(record)
    if fmt == "alpaca":
        return {"instruction": question, "input": "", "output": answer}
    if fmt == "sharegpt":
        return {
            "id": record.get("id"),
            "conversations": [
                {"from": "human", "value": question},
                {"from": "gpt", "value": answer},
            ],
        }
    return {"id": record.get("id"), "messages": record.get("messages"), "meta": record.get("meta")}


def _rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    for record in read_records(path):
        yield convert(record, fmt)


def export(run_dir: Path, fmt: str, out_dir: Path | None = None) -> Path:
    """Write `run_dir`'s records in `fmt` under out_dir (default run_dir/export/fmt); returns it."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    src = source_file(run_dir)
    target = out_dir or run_dir / "export" / fmt
    target.mkdir(parents=True, exist_ok=True)
    if fmt in ("messages", "alpaca", "sharegpt"):
        data = b"".join(orjson.dumps(row) + b"\n" for row in _rows(src, fmt))
        atomic_write_bytes(target / "train.jsonl", data)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(_rows(src, "messages")))
        pq.write_table(table, target / "train.parquet")
    else:
        try:
            from datasets import Dataset
        except ImportError:
            raise UserError("--format hf needs: pip install 'glan[hf]'") from None
        Dataset.from_list(list(_rows(src, "messages"))).save_to_disk(str(target / "dataset"))
    atomic_write_text(target / "README.md", dataset_card(run_dir, src, fmt))
    return target


def _load_json(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def dataset_card(run_dir: Path, src: Path, fmt: str) -> str:
    """A README for the export: what it is, how it was made and cleaned, and its caveats."""
    from collections import Counter

    manifest = _load_json(run_dir / "manifest.json")
    cleaning = _load_json(run_dir / "clean_summary.json")
    fields: Counter[str] = Counter()
    disciplines: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    n = 0
    for record in read_records(src):
        meta = record.get("meta") or {}
        fields[meta.get("field", "?")] += 1
        disciplines[meta.get("discipline", "?")] += 1
        strategies[meta.get("strategy", "?")] += 1
        n += 1
    cfg = manifest.get("config", {})
    stage_rows = []
    for stage, models in (manifest.get("usage") or {}).items():
        for model, row in models.items():
            stage_rows.append(
                f"| {stage} | {model} | {row['requests']:,} | {row['prompt_tokens']:,} | "
                f"{row['completion_tokens']:,} | ${row['cost_usd']:.4f} |"
            )
    lines = [
        "---",
        "license: other",
        "task_categories:\n- text-generation",
        "tags:\n- synthetic\n- instruction-tuning\n- glan",
        "---",
        "",
        "# GLAN synthetic instruction data",
        "",
        f"{n:,} question-answer pairs made with [glan](https://github.com/) by walking a taxonomy of "
        "human knowledge (field > sub-field > discipline > subject > syllabus > class sessions and "
        "key concepts) and asking a model for homework questions and their answers, the method "
        "of Li et al. (2024), *Synthetic Data (Almost) from Scratch: Generalized Instruction "
        "Tuning for Language Models*.",
        "",
        f"Format: `{fmt}`. Source file: `{src.name}`.",
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
        f"glan {manifest.get('glan_version', '?')}, subjects mode `{cfg.get('subjects_mode', '?')}`.",
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
            f"- decontaminated against {', '.join(s.get('benchmarks', []))} by {s.get('ngram')}-gram "
            f"overlap (>= {s.get('min_overlap')} of an item's n-grams): "
            f"{cleaning.get('contaminated') or 'nothing matched'}",
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


def push_to_hub(folder: Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload an export folder (card included) as a dataset repository; returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push-to-hub needs: pip install 'glan[hf]'") from None
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    except Exception as exc:  # the hub client raises many kinds; the user needs one line
        raise UserError(f"push to {repo_id} failed: {str(exc).splitlines()[0][:200]}") from None
    return str(url)
