"""Semantic dedup (`glan clean --semantic`) at scale: wall time, CPU time and peak RSS of the
search over kept embeddings, per size and memory budget, each run in its own process.

The encoder is a stand-in, not MiniLM: 384-float vectors made from a seeded generator per
batch of 4,096 (random directions, so unrelated questions have cosine ~0 +- 0.05), of which
2% are a noisy copy (cosine ~0.97) of a vector of an earlier batch. So nearly every record is
kept: the kept set, which the search scans for every batch, grows as fast as it can. What the
real encoder costs per 1,000 texts is a separate step (--minilm).

`--before REV` also runs the in-memory deduplicator of a git revision (its
src/glan/post/semantic.py) on the same vectors and compares which records each removed.

Usage: python bench/semantic_scaling.py --sizes 100000 1000000 [--memory-gb 2 0.05]
       [--before REV] [--minilm] [--dir /path/with/space]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import hashlib, importlib.util, json, resource, sys, time
from pathlib import Path
import numpy as np

n, memory_gb, folder, module = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
BATCH, DIM, SHARE, SEED = 4096, 384, 0.02, 7

def raw(b):
    return np.random.default_rng([SEED, b]).standard_normal((BATCH, DIM), dtype=np.float32)

def encode(texts):
    b = int(texts[0][1:]) // BATCH
    v = raw(b)[: len(texts)]
    planted = np.zeros(len(texts), dtype=bool)
    if b:
        rng = np.random.default_rng([SEED, b, 1])
        planted = rng.random(len(texts)) < SHARE
        source = raw(int(rng.integers(0, b)))[rng.integers(0, BATCH, int(planted.sum()))]
        v[planted] = source + rng.normal(0, 0.25, source.shape).astype(np.float32)
    encode.planted += int(planted.sum())
    return v

encode.planted = 0
if module == "current":
    from glan.post.semantic import SemanticDeduplicator
    dedup = SemanticDeduplicator(encode, 0.92, int(memory_gb * (1 << 30)), Path(folder))
else:
    spec = importlib.util.spec_from_file_location("before", module)
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)
    dedup = before.SemanticDeduplicator(encode, 0.92)
removed, named = hashlib.sha256(), hashlib.sha256()
found = 0
wall, cpu = time.perf_counter(), time.process_time()
for start in range(0, n, BATCH):
    names = [f"v{k}" for k in range(start, min(n, start + BATCH))]
    for name, of in zip(names, dedup.check_batch(names, names)):
        if of is not None:
            found += 1
            removed.update(name.encode() + b"\\n")
            named.update(f"{name} {of}\\n".encode())
kept = getattr(dedup, "kept", None)
print(json.dumps({
    "seconds": time.perf_counter() - wall,
    "cpu_seconds": time.process_time() - cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "found": found,
    "planted": encode.planted,
    "on_disk": kept.on_disk if kept is not None else 0,
    "removed_sha256": removed.hexdigest()[:16],
    "named_sha256": named.hexdigest()[:16],
}))
"""

MINILM = """
import json, sys, time
from glan.post.semantic import minilm_encoder
t = time.perf_counter()
encode = minilm_encoder()
load = time.perf_counter() - t
texts = [
    f"Question {i}: how does the {i % 97}th topic of the syllabus relate to its neighbours, "
    "and which examples would a careful student give to show it?"
    for i in range(int(sys.argv[1]))
]
encode(texts[:64])  # warm-up
t, cpu = time.perf_counter(), time.process_time()
encode(texts)
print(json.dumps({"load_seconds": load, "seconds": time.perf_counter() - t,
                  "cpu_seconds": time.process_time() - cpu, "texts": len(texts)}))
"""


def run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run(
        [sys.executable, "-c", *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--memory-gb", type=float, nargs="+", default=[2.0])
    parser.add_argument("--before", help="git revision whose in-memory deduplicator to run too")
    parser.add_argument("--minilm", type=int, default=0, help="texts to encode with MiniLM")
    parser.add_argument("--dir", type=Path, default=None, help="where the kept vectors spill")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}", flush=True)
    if args.minilm:
        row = run([MINILM, str(args.minilm)])
        per = 1000 * row["seconds"] / row["texts"]
        print(json.dumps({"step": "minilm", **row, "seconds_per_1000": per}), flush=True)
    before = None
    if args.before:
        source = subprocess.run(
            ["git", "show", f"{args.before}:src/glan/post/semantic.py"],
            capture_output=True,
            check=True,
            cwd=Path(__file__).parents[1],
        ).stdout
        before = Path(tempfile.mkdtemp()) / "semantic_before.py"
        before.write_bytes(source)
    for n in args.sizes:
        runs = [("current", gb) for gb in args.memory_gb]
        runs += [(str(before), 0.0)] if before else []
        for module, gb in runs:
            with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                row = run([RUN, str(n), str(gb), folder, module])
            step = f"bounded, --memory-gb {gb}" if module == "current" else f"{args.before}"
            print(json.dumps({"step": step, "n": n, **row}), flush=True)
            print(f"  load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
