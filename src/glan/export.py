"""Export a run to the format a trainer reads, with a dataset card next to it.

Formats: `messages` (chat JSONL, what TRL's SFTTrainer and most chat trainers read), `alpaca`
(instruction/input/output), `sharegpt` (conversations with from/value), `parquet`, and `hf` (a
Hugging Face dataset saved with save_to_disk), each in shards of a set size (glan.post.shards).
`push_to_hub` uploads the export folder, card included, as a dataset repository, skipping what
the repository already holds (glan.post.hub).

An export never ships stale records: clean.jsonl is used only when it was made from the current
instructions.jsonl (glan.post.provenance), and the card names the records' fingerprint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glan.errors import UserError
from glan.post.card import CardStats, dataset_card
from glan.post.clean import read_records_sized
from glan.post.hub import push_folder as push_to_hub  # noqa: F401 (the export's upload)
from glan.post.progress import Step, Steps, begin
from glan.post.provenance import RECORDS, current_clean_summary
from glan.post.shards import (
    BATCH_ROWS,
    DEFAULT_SHARD_BYTES,
    ArrowShards,
    JsonlShards,
    ParquetShards,
    ShardWriter,
    unify,
    write_dataset_state,
)

Format = Literal["messages", "alpaca", "sharegpt", "parquet", "hf"]
FORMATS: tuple[str, ...] = ("messages", "alpaca", "sharegpt", "parquet", "hf")


@dataclass
class Exported:
    """What an export wrote: its folder, the records, and the data files (relative to the
    folder, in order); `oversized`: the files that hold one record larger than the shard size
    on its own (each such record gets a file of its own, over the size)."""

    folder: Path
    format: str
    records: int
    files: list[str] = field(default_factory=list)
    oversized: list[str] = field(default_factory=list)


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


def export(
    run_dir: Path,
    fmt: str,
    out_dir: Path | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    steps: Steps | None = None,
) -> Exported:
    """Write `run_dir`'s records in `fmt` under out_dir (default run_dir/export/fmt), in files
    of at most `shard_bytes` each (a record larger on its own gets a file to itself), with a
    dataset card.

    Two streaming passes (the card's counts and the columns' types, then the shards), so memory
    stays flat at any size. Files are made in a staging folder inside the target and moved into
    place at the end (replacing an earlier export's files of this format); a failed export
    leaves the target as it was, and removes any folder it made."""
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
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".export-"))
    try:
        stats, schema = _scan(src, fmt, steps)
        files, oversized = _write(src, staging, fmt, shard_bytes, schema, stats.n, steps)
        card = dataset_card(run_dir, src, fmt, cleaning, stats, files)
        (staging / "README.md").write_text(card, encoding="utf-8")
        _publish(staging, target, fmt)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # the outermost folder this export made: no empty dir left behind
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    return Exported(target, fmt, stats.n, files, oversized)


def _missing_dirs(target: Path) -> list[Path]:
    missing = []
    while not target.exists():
        missing.append(target)
        target = target.parent
    return missing


def _batches(
    src: Path, fmt: str | None, step: Step, by_bytes: bool
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(records, rows in `fmt`, none without) in batches of BATCH_ROWS, counting on `step`."""
    records: list[dict[str, Any]] = []
    for record, size in read_records_sized(src):
        records.append(record)
        step.done += size if by_bytes else 1
        if len(records) == BATCH_ROWS:
            yield records, [convert(r, fmt) for r in records] if fmt else []
            records = []
    if records:
        yield records, [convert(r, fmt) for r in records] if fmt else []


def _scan(src: Path, fmt: str, steps: Steps | None) -> tuple[CardStats, Any]:
    """Pass 1: the card's counts and, for parquet and hf, one schema that fits every row."""
    stats = CardStats()
    schema = None
    step = begin(steps, "export: read", src.stat().st_size, "bytes")
    tabular = fmt in ("parquet", "hf")
    for records, rows in _batches(src, "messages" if tabular else None, step, by_bytes=True):
        for record in records:
            stats.add(record)
        if tabular:
            schema = unify(schema, rows)
    return stats, schema


def _write(
    src: Path,
    folder: Path,
    fmt: str,
    shard_bytes: int,
    schema: Any,
    total: int,
    steps: Steps | None,
) -> tuple[list[str], list[str]]:
    """Pass 2: the shards; returns their paths relative to `folder`, and those of the files
    holding a lone record over the shard size."""
    step = begin(steps, f"export: write {fmt}", total)
    if fmt in ("messages", "alpaca", "sharegpt"):
        writer: ShardWriter = JsonlShards(folder, "train", shard_bytes)
    elif fmt == "parquet":
        writer = ParquetShards(folder, "train", shard_bytes, schema or _empty_schema())
    else:
        from datasets import Features

        features = Features.from_arrow_schema(schema or _empty_schema())
        (folder / "dataset").mkdir()
        writer = ArrowShards(folder / "dataset", "data", shard_bytes, features.arrow_schema)
    row_fmt = fmt if writer.suffix == ".jsonl" else "messages"
    for _, rows in _batches(src, row_fmt, step, by_bytes=False):
        writer.write(rows)
    names = writer.close()
    if fmt == "hf":
        write_dataset_state(folder / "dataset", features, names, uuid.uuid4().hex[:16])
        names = [f"dataset/{name}" for name in names]
    return names, [names[i] for i in writer.oversized]


def _empty_schema() -> Any:
    """The columns of an export with no records."""
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("id", pa.string()), ("messages", pa.list_(turn))])


_OUTPUTS = {"parquet": ("train.parquet", "train-*-of-*.parquet"), "hf": ("dataset",)}
_JSONL_OUTPUTS = ("train.jsonl", "train-*-of-*.jsonl")


def _publish(staging: Path, target: Path, fmt: str) -> None:
    """Replace an earlier export's files of this format (a stale shard must not linger) by the
    staged ones."""
    for pattern in _OUTPUTS.get(fmt, _JSONL_OUTPUTS):
        for old in target.glob(pattern):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    for item in staging.iterdir():
        os.replace(item, target / item.name)
    staging.rmdir()
