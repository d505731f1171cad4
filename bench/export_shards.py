"""What bounding every export file by --shard-size costs: CPU seconds of `glan export` per
format and shard size, this checkout against another glan source tree (an earlier commit).

Parquet and Arrow files are bounded by measuring each batch encoded on its own before writing
it (glan.post.shards); this shows what that measuring costs, and that the largest file now
stays within the size while the earlier code passed it.

The run is bench/post_scaling.py's synthetic one. Each export is its own `glan` process; CPU is
user + system of that process (load-independent, unlike wall time). Medians of --reps runs,
the two trees alternating.

Usage:
  git archive OLD_COMMIT src | tar -x -C /tmp/base
  python bench/export_shards.py --base-src /tmp/base/src --records 100000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from post_scaling import make_run

HERE = Path(__file__).resolve().parent
SUFFIX = {"parquet": "parquet", "hf": "arrow", "messages": "jsonl"}
CASES = [("parquet", "500MB"), ("parquet", "10MB"), ("hf", "10MB"), ("messages", "10MB")]


def export_cpu(src: Path, run: Path, fmt: str, shard: str, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "glan", "export", str(run), "-f", fmt, "-q"]
    command += ["--shard-size", shard, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    files = list(out.rglob(f"*.{SUFFIX[fmt]}"))
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"cpu_s": cpu, "files": len(files), "largest": max(f.stat().st_size for f in files)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-src", type=Path, required=True, help="the other glan src/")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    trees = {"base": args.base_src.resolve(), "this": HERE.parent / "src"}
    with tempfile.TemporaryDirectory(prefix="glan-bench-") as tmp:
        run = Path(tmp) / "run"
        make_run(run, args.records)
        print(f"load before: {os.getloadavg()}", flush=True)
        seen: dict[tuple[str, str, str], list[dict]] = {}
        for _ in range(args.reps):
            for fmt, shard in CASES:
                for name, src in trees.items():
                    out = Path(tmp) / f"{name}-{fmt}-{shard}"
                    seen.setdefault((fmt, shard, name), []).append(
                        export_cpu(src, run, fmt, shard, out)
                    )
        for (fmt, shard, name), rows in seen.items():
            row = {
                "format": fmt,
                "shard_size": shard,
                "tree": name,
                "median_cpu_s": round(statistics.median(r["cpu_s"] for r in rows), 2),
                "files": rows[-1]["files"],
                "largest_file": rows[-1]["largest"],
            }
            print(json.dumps(row), flush=True)
        print(f"load after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
