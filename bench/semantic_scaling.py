"""Semantic dedup (`glan clean --semantic`) at scale: wall time, CPU time and peak RSS of the
search over kept embeddings, per size and memory budget, each run in its own process.

The encoder is a stand-in, not MiniLM: 384-float vectors made from a seeded generator per
batch of 4,096 (random directions, so unrelated questions have cosine ~0 +- 0.05), of which
2% are a noisy copy (cosine ~0.97) of a vector of an earlier batch. So nearly every record is
kept: the kept set, which the search scans for every batch, grows as fast as it can. What the
real encoder costs per 1,000 texts is a separate step (--minilm).

`--before REV` also runs the in-memory deduplicator of a git revision (its
src/glan/post/semantic.py) on the same vectors and compares which records each removed.

`--probe K`: a whole run costs about 384 * N**2 multiply-adds (every batch against every kept
vector), hours at 1M on a busy 2-core machine. The probe instead stores K kept vectors as a
run would have (without searching them), then times 3 batches of 4,096 against them and takes
the peak RSS: the memory of a run at K kept, and the cost of its last batches (a whole run of
N = K costs about N / 4,096 / 2 such batches).

Usage: python bench/semantic_scaling.py --sizes 100000 [--memory-gb 2 0.05] [--before REV]
       [--probe 1000000] [--minilm 1000] [--dir /path/with/space]
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

PROBE = """
import json, resource, statistics, sys, time
from pathlib import Path
import numpy as np
from glan.post.semantic import SemanticDeduplicator

k, memory_gb, folder = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
BATCH, DIM = 4096, 384

def raw(b, seed=7):
    return np.random.default_rng([seed, b]).standard_normal((BATCH, DIM), dtype=np.float32)

def encode(texts):
    b = int(texts[0][1:]) // BATCH
    if b < k // BATCH:  # the first batch, stored as a run stores it
        return raw(b)[: len(texts)]
    v = raw(b, seed=8)[: len(texts)]  # the timed batches: new vectors, 2% copies of stored
    rng = np.random.default_rng([7, b, 1])
    planted = rng.random(len(texts)) < 0.02
    source = raw(int(rng.integers(0, k // BATCH)))[rng.integers(0, BATCH, int(planted.sum()))]
    v[planted] = source + rng.normal(0, 0.25, source.shape).astype(np.float32)
    encode.planted += int(planted.sum())
    return v

encode.planted = 0
dedup = SemanticDeduplicator(encode, 0.92, int(memory_gb * (1 << 30)), Path(folder))
dedup.check_batch([f"v{i}" for i in range(BATCH)], [f"v{i}" for i in range(BATCH)])
t = time.perf_counter()
for start in range(BATCH, k, BATCH):  # the rest stored as a run keeps them, without search
    v = raw(start // BATCH)[: min(BATCH, k - start)]
    dedup.kept.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    dedup._kept_ids.extend([f"v{i}" for i in range(start, start + len(v))])
fill = time.perf_counter() - t
stored = dedup.kept.count
walls, cpus, found = [], [], 0
first = (k // BATCH + 1) * BATCH
for start in range(first, first + 3 * BATCH, BATCH):
    names = [f"v{i}" for i in range(start, start + BATCH)]
    wall, cpu = time.perf_counter(), time.process_time()
    found += sum(of is not None for of in dedup.check_batch(names, names))
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
print(json.dumps({
    "stored": stored, "fill_seconds": fill,
    "batch_seconds": statistics.median(walls), "batch_cpu_seconds": statistics.median(cpus),
    "found": found, "planted": encode.planted, "on_disk": dedup.kept.on_disk,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--memory-gb", type=float, nargs="+", default=[2.0])
    parser.add_argument("--before", help="git revision whose in-memory deduplicator to run too")
    parser.add_argument("--probe", type=int, nargs="*", default=[], help="kept vectors to probe")
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
    for k in args.probe:
        for gb in args.memory_gb:
            with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                row = run([PROBE, str(k), str(gb), folder])
            print(json.dumps({"step": f"probe, --memory-gb {gb}", **row}), flush=True)
            print(f"  load average {os.getloadavg()}", flush=True)
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
