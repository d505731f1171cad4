"""Instruction-response pairs from what glan writes: a run directory, a messages export (JSONL,
Parquet, or a `datasets` folder saved with save_to_disk)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.export import source_file
from glan.post.clean import read_records

Pair = dict[str, list[dict[str, str]]]  # {"prompt": [user turns], "completion": [assistant turn]}


def _records(source: Path) -> list[dict[str, Any]]:
    if source.is_dir():
        if (source / "instructions.jsonl").is_file() or (source / "clean.jsonl").is_file():
            return list(read_records(source_file(source)))
        for name in ("train.jsonl", "train.parquet"):
            if (source / name).is_file():
                return _records(source / name)
        for suffix in ("jsonl", "parquet"):  # a sharded export, read in shard order
            shards = sorted(source.glob(f"train-*-of-*.{suffix}"))
            if shards:
                return [record for shard in shards for record in _records(shard)]
        if (source / "dataset" / "dataset_info.json").is_file():  # glan export --format hf
            return _records(source / "dataset")
        if (source / "dataset_info.json").is_file() or (source / "dataset_dict.json").is_file():
            from datasets import DatasetDict, load_from_disk

            data = load_from_disk(str(source))
            return list(data["train"] if isinstance(data, DatasetDict) else data)
        raise UserError(f"{source}: not a glan run, a messages export nor a saved dataset")
    if source.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(source).to_pylist()
    return list(read_records(source))


def to_pair(record: dict[str, Any]) -> Pair | None:
    """Prompt/completion form, which makes TRL put the loss on the completion only."""
    messages = [m for m in record.get("messages") or [] if m.get("content")]
    if not messages or messages[-1].get("role") != "assistant":
        return None
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    if not prompt:
        return None
    return {
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": messages[-1]["content"]}],
    }


def load_pairs(source: Path) -> list[Pair]:
    if not source.exists():
        raise UserError(f"training data not found: {source}")
    pairs = [p for p in map(to_pair, _records(source)) if p is not None]
    if not pairs:
        raise UserError(f"{source}: no instruction-response pairs (messages ending in an answer)")
    return pairs


def fingerprint(pairs: list[Pair]) -> dict[str, Any]:
    """Identifies the exact training data: order-sensitive hash of the canonical pairs."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(orjson.dumps(pair, option=orjson.OPT_SORT_KEYS) + b"\n")
    return {"pairs": len(pairs), "sha256": digest.hexdigest()}
