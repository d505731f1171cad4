"""The benchmark test items glan ships, so decontamination works offline on any install.

Only what decontamination reads is shipped: each item's id and text (the question or prompt),
xz-compressed JSONL, one file per benchmark, about 1 MB in all. Every benchmark's licence allows
it (GSM8K, MMLU, HumanEval, MATH: MIT; IFEval: Apache-2.0); the notices are in
benchmark_data/LICENSES.md. The files are made by `glan.post.make_shipped`.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "benchmark_data"


def shipped_file(name: str) -> Path | None:
    path = DATA_DIR / f"{name}.jsonl.xz"
    return path if path.is_file() else None
