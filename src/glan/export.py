"""Export a run to the format a trainer reads, with a dataset card next to it.

Formats: `messages` (chat JSONL, what TRL's SFTTrainer and most chat trainers read), `alpaca`
(instruction/input/output), `sharegpt` (conversations with from/value), `parquet`, and `hf` (a
Hugging Face dataset saved with save_to_disk). `push_to_hub` uploads the export folder, card
included, as a dataset repository.

An export never ships stale records: clean.jsonl is used only when it was made from the current
instructions.jsonl (glan.post.provenance), and the card names the records' fingerprint.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from glan import __version__
from glan.errors import UserError
from glan.post.clean import read_records
from glan.post.provenance import RECORDS, current_clean_summary, records_fingerprint
from glan.run.files import atomic_write_bytes, atomic_write_text

Format = Literal["messages", "alpaca", "sharegpt", "parquet", "hf"]
FORMATS: tuple[str, ...] = ("messages", "alpaca", "sharegpt", "parquet", "hf")


def source_file(run_dir: Path) -> Path:
    """The cleaned records when `glan clean` has run on the current records, else the raw ones;
    a UserError when clean.jsonl was made from older records."""
    return _source(run_dir)[0]


def _source(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The records to export and, when they are the cleaned ones, their clean summary."""
    cleaning = current_clean_summary(run_dir)
    if cleaning:
        return run_dir / "clean.jsonl", cleaning
    if (run_dir / RECORDS).is_file():
        return run_dir / RECORDS, {}
    raise UserError(f"{run_dir} holds neither clean.jsonl nor {RECORDS}")


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
    src, cleaning = _source(run_dir)
    if fmt == "hf":
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise UserError("--format hf needs: pip install 'glan[hf]'") from None
    target = out_dir or run_dir / "export" / fmt
    created = _missing_dirs(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        _write(src, target, fmt)
        atomic_write_text(target / "README.md", dataset_card(run_dir, src, fmt, cleaning))
    except BaseException:
        if created:  # the outermost folder this export made: no empty dir left behind
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    return target


def _missing_dirs(target: Path) -> list[Path]:
    missing = []
    while not target.exists():
        missing.append(target)
        target = target.parent
    return missing


def _write(src: Path, target: Path, fmt: str) -> None:
    if fmt in ("messages", "alpaca", "sharegpt"):
        data = b"".join(orjson.dumps(row) + b"\n" for row in _rows(src, fmt))
        atomic_write_bytes(target / "train.jsonl", data)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(_rows(src, "messages")))
        pq.write_table(table, target / "train.parquet")
    else:
        from datasets import Dataset

        Dataset.from_list(list(_rows(src, "messages"))).save_to_disk(str(target / "dataset"))


def _load_json(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def dataset_card(run_dir: Path, src: Path, fmt: str, cleaning: dict[str, Any]) -> str:
    """A README for the export: what it is, how it was made and cleaned (`cleaning`: the
    current clean summary, {} when the source is the raw records), and its caveats."""
    from collections import Counter

    manifest = _load_json(run_dir / "manifest.json")
    records = records_fingerprint(run_dir, cleaning) if (run_dir / RECORDS).is_file() else None
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
