"""The user text of each record of a final training file, in the formats `glan export` writes
and those a mix with other data is likely to hold: JSONL or Parquet rows with `messages`
(role/content; glan's own records and the messages and parquet exports), `conversations`
(ShareGPT's from/value), `instruction` (+ `input`; Alpaca) or `prompt` (a string, or
role/content turns), and the Arrow files of a Hugging Face dataset saved to disk (glan's `hf`
export; read with pyarrow, a dependency already: `datasets` is not needed). A directory is read
as a glan export (train.jsonl, train.parquet, their shards, or the hf export's dataset folder),
a saved dataset (state.json naming its .arrow files) or a run (clean.jsonl when current, else
instructions.jsonl).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.export import source_file
from glan.glantest.overlap import user_text
from glan.post.clean import read_records

PARQUET_ROWS = 4096
USER_ROLES = ("user", "human")


@dataclass(frozen=True)
class TrainingRecord:
    id: str  # the record's id, else FILE:NUMBER
    text: str
    subject: str | None  # glan's meta.subject, when the format kept it


def _turns(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return None
    users = [
        {"role": "user", "content": t.get("content", t.get("value"))}
        for t in turns
        if isinstance(t, dict) and (t.get("role") or t.get("from")) in USER_ROLES
    ]
    return user_text(users)


def text_of(record: dict[str, Any]) -> str | None:
    """The record's user text, or None when its format is none of the known ones."""
    for key in ("messages", "conversations"):
        if key in record:
            return _turns(record[key])
    if isinstance(record.get("instruction"), str):
        extra = record.get("input")
        return record["instruction"] + (f"\n{extra}" if isinstance(extra, str) and extra else "")
    prompt = record.get("prompt")
    return prompt if isinstance(prompt, str) else _turns(prompt)


SUFFIXES = (".jsonl", ".parquet", ".arrow")


def _saved_dataset(folder: Path) -> list[Path]:
    """The .arrow files of a dataset saved to disk, in the order its state.json lists them."""
    try:
        state = orjson.loads((folder / "state.json").read_bytes())
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder}/state.json: not a saved Hugging Face dataset's") from None
    return [folder / name for name in names]


def files_of(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"training file not found: {path}")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise UserError(f"{path}: unknown format (expected .jsonl, .parquet or .arrow)")
        return [path]
    if (path / "instructions.jsonl").is_file() or (path / "clean.jsonl").is_file():
        return [source_file(path)]
    for pattern in ("train.jsonl", "train.parquet", "train-*-of-*.jsonl", "train-*-of-*.parquet"):
        found = sorted(path.glob(pattern))
        if found:
            return found
    for folder in (path, path / "dataset"):  # a saved dataset, or the hf export holding one
        if (folder / "state.json").is_file():
            return _saved_dataset(folder)
    raise UserError(
        f"{path}: no training file in it (a glan export or run directory, or a saved "
        "Hugging Face dataset; files read: .jsonl, .parquet, .arrow)"
    )


def _arrow_batches(path: Path) -> Iterator[Any]:
    """save_to_disk writes the Arrow IPC stream format; the file format is read too."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                file = pa.ipc.open_file(source)
                reader = (file.get_batch(i) for i in range(file.num_record_batches))
            yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Arrow file ({exc})") from None


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
        for batch in table.iter_batches(PARQUET_ROWS):
            yield from batch.to_pylist()
    elif path.suffix == ".arrow":
        for batch in _arrow_batches(path):
            yield from batch.to_pylist()
    else:
        yield from read_records(path)


def read_training(path: Path) -> Iterator[TrainingRecord]:
    """Each record's user text, file by file; a record of no known format is a UserError."""
    for file in files_of(path):
        for number, row in enumerate(_rows(file), 1):
            text = text_of(row) if isinstance(row, dict) else None
            if text is None:
                raise UserError(
                    f"{file}:{number}: unknown record format "
                    "(expected messages, conversations, instruction or prompt)"
                )
            meta = row.get("meta")
            subject = meta.get("subject") if isinstance(meta, dict) else None
            record_id = row.get("id")
            yield TrainingRecord(
                str(record_id) if record_id is not None else f"{file.name}:{number}",
                text,
                subject if isinstance(subject, str) and subject else None,
            )
