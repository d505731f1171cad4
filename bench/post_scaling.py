"""Clean, export and report at scale: wall time, records/s and peak memory per step, per size.

Makes a synthetic run directory of N records (20-60-word questions from
bench/clean_throughput.py: 2% near-duplicates, 0.1% planted benchmark items; 80-250-word
answers; taxonomy metadata), then runs, each as its own `glan` process:

  dedup    duplicate removal alone (glan.post.dedup_disk: signatures, sorts, first copies)
  reference  the in-memory index (glan.post.dedup.Deduplicator) on the same file: its removals'
           digest must equal dedup's (only with --steps reference)
  clean    glan clean (filters, dedup, decontamination against the five shipped benchmarks)
  parquet  glan export --format parquet
  hf       glan export --format hf
  report   glan report

Memory is measured two ways while a step runs: the peak RSS of its largest process (what
/usr/bin/time -v reports) and the peak sum of PSS over the step's process tree sampled every
0.2 s (worker processes included, shared pages counted once), which is the memory the step needs.
CPU seconds (user + system, workers included) are given too: on a shared machine the wall time
depends on the load, records per CPU-second much less.

Usage: python bench/post_scaling.py --sizes 250000 1000000 [--dir /path/with/space]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from clean_throughput import VOCAB, iter_questions

TAXONOMY = [
    (f, s, d)
    for f in ("Sciences", "Humanities", "Engineering", "Social sciences")
    for s in ("One", "Two", "Three", "Four")
    for d in ("Alpha", "Beta", "Gamma", "Delta", "Epsilon")
]

DEDUP = """
import hashlib, json, sys, time
from pathlib import Path
from glan.post.dedup_disk import DedupParams, plan_duplicates
from glan.post.filters import FilterSettings
inp, work, budget = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
params = DedupParams(True, FilterSettings(), True, 0.7, 128, 3)
t = time.perf_counter()
plan = plan_duplicates(inp, params, work, int(budget * (1 << 30)), 2)
seconds = time.perf_counter() - t
found, digest = 0, hashlib.sha256()
for k in range(plan.count):
    d = plan.check("", "")
    if d is not None:
        found += 1
        digest.update(f"{plan.record_id(k)} {d.kind} {d.of}\\n".encode())
print(json.dumps({"seconds": seconds, "found": found, "sha256": digest.hexdigest()}))
"""

# The in-memory index over the same file: what the bounded path must remove, exactly.
REFERENCE = """
import hashlib, json, sys, time
from pathlib import Path
from glan.post.clean import read_records
from glan.post.dedup import Deduplicator
from glan.post.filters import FilterSettings, record_text, reject_reason
dedup, found, digest = Deduplicator(0.7), 0, hashlib.sha256()
t = time.perf_counter()
for n, record in enumerate(read_records(Path(sys.argv[1])), 1):
    if reject_reason(record, FilterSettings()) is None:
        rid = str(record.get("id", n))
        d = dedup.check(rid, record_text(record))
        if d is not None:
            found += 1
            digest.update(f"{rid} {d.kind} {d.of}\\n".encode())
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "found": found, "sha256": digest.hexdigest()}))
"""


def make_run(run: Path, n: int, seed: int = 0) -> dict[str, int]:
    run.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    planted = {"near": 0, "benchmark": 0}
    with open(run / "instructions.jsonl", "wb") as fh:
        for i, (kind, question) in enumerate(iter_questions(n, seed)):
            planted[kind] = planted.get(kind, 0) + 1
            field, sub, disc = TAXONOMY[i % len(TAXONOMY)]
            answer = " ".join(rng.choices(VOCAB, k=rng.randint(80, 250))) + "."
            record = {
                "id": f"{i:012x}",
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
                "meta": {
                    "field": field,
                    "subfield": sub,
                    "discipline": disc,
                    "subject": f"{disc} {i % 50}",
                    "level": ("introductory", "intermediate", "advanced")[i % 3],
                    "sessions": [f"session {i % 7}"],
                    "concepts": [f"concept {i % 11}", f"concept {i % 13}"],
                    "strategy": "single" if i % 4 else "multi",
                    "question_model": "bench",
                    "answer_model": "bench",
                    "answer_finish_reason": "stop",
                },
            }
            fh.write(orjson.dumps(record) + b"\n")
    manifest = {"seed": seed, "target": n, "status": "done", "config": {}, "usage": {}}
    (run / "manifest.json").write_bytes(orjson.dumps(manifest))
    return planted


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: list[str]) -> dict:
    """Run `cmd` under /usr/bin/time: wall time, peak RSS of its largest process (time's %M),
    peak PSS of its whole process tree (sampled here)."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-f", "MAXRSS_KB %M CPU_S %U %S", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak_pss = 0
    while proc.poll() is None:
        peak_pss = max(peak_pss, sum(_pss_kb(p) for p in _tree(proc.pid)))
        time.sleep(0.2)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{err.decode()[-2000:]}")
    fields = next(line for line in err.decode().splitlines() if line.startswith("MAXRSS_KB"))
    _, rss_kb, _, user, system = fields.split()
    return {
        "seconds": seconds,
        "cpu_s": float(user) + float(system),  # the step and its workers, summed
        "peak_rss_mb": int(rss_kb) / 1024,
        "peak_tree_pss_mb": peak_pss / 1024,
        "stdout": out.decode(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=None, help="where the runs go (disk space)")
    parser.add_argument("--steps", nargs="+", default=["dedup", "clean", "parquet", "hf", "report"])
    parser.add_argument("--memory-gb", type=float, default=2.0, help="dedup and clean's budget")
    args = parser.parse_args()
    glan = [sys.executable, "-m", "glan"]
    print(f"load before: {os.getloadavg()}", flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="glan-bench-") as tmp:
            run = Path(tmp) / "run"
            t = time.perf_counter()
            planted = make_run(run, n)
            size = (run / "instructions.jsonl").stat().st_size
            print(
                f"N={n:,}: run made in {time.perf_counter() - t:.0f} s, "
                f"{size / 1e9:.2f} GB, planted {planted}",
                flush=True,
            )
            commands = {
                "dedup": [
                    *(sys.executable, "-c", DEDUP, str(run / "instructions.jsonl"), tmp),
                    str(args.memory_gb),
                ],
                "reference": [sys.executable, "-c", REFERENCE, str(run / "instructions.jsonl")],
                "clean": [*glan, "clean", str(run), "-q", "--memory-gb", str(args.memory_gb)],
                "parquet": [*glan, "export", str(run), "-f", "parquet", "-q"],
                "hf": [*glan, "export", str(run), "-f", "hf", "-q"],
                "report": [*glan, "report", str(run), "-q"],
            }
            for step in args.steps:
                row = measure(commands[step])
                extra = ""
                if step in ("dedup", "reference"):
                    got = json.loads(row["stdout"].strip().splitlines()[-1])
                    extra = (
                        f"; removed {got['found']:,} (planted near {planted['near']:,}), "
                        f"sha256 of (id, kind, duplicate of) {got['sha256'][:16]}"
                    )
                if step == "clean":
                    extra = "; " + row["stdout"].strip().splitlines()[-1][:160]
                print(
                    json.dumps(
                        {
                            "n": n,
                            "step": step,
                            "memory_gb": args.memory_gb,
                            "seconds": round(row["seconds"], 1),
                            "records_per_s": round(n / row["seconds"]),
                            "cpu_s": round(row["cpu_s"], 1),
                            "records_per_cpu_s": round(n / row["cpu_s"]),
                            "peak_rss_mb": round(row["peak_rss_mb"]),
                            "peak_tree_pss_mb": round(row["peak_tree_pss_mb"]),
                            "load": [round(x, 1) for x in os.getloadavg()],
                        }
                    )
                    + extra,
                    flush=True,
                )


if __name__ == "__main__":
    main()
