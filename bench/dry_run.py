"""The dry run of a run directory (glan.rerun): how long pricing a re-run takes, and how it grows.

For each N a run is made against the fake server (its own process, no latency), then priced
three ways, each timed (median of --repeats) in a fresh process as `glan generate --dry-run`
runs it, imports included:
- finished: the same command (0 calls);
- update: the answers' model changed, --update (N answers to send; N questions from the cache);
- extend: -n 2N (the new half to send, walked over stand-in replies).
Beside them, the real re-run of the finished run (what the user would otherwise try), and the
time to copy the run's decisions into the scratch store (glan.run.snapshot), in process.

Usage: python bench/dry_run.py [--pairs 2000 20000] [--repeats 3] [--cases finished update extend]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from glan.aio import run as run_async
from glan.config import GenerateConfig
from glan.pipeline import Pipeline
from glan.run.snapshot import copy_decisions
from glan.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_throughput import start_server


def timed(args: list[str], repeats: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "glan", *args], capture_output=True, text=True, check=True
        )
        times.append(time.perf_counter() - started)
        out = proc.stdout
    return statistics.median(times), out


def summary(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("re-run of"))


def bench(n: int, base: str, repeats: int, work: Path, cases: list[str]) -> None:
    run = work / f"run{n}"
    cfg = GenerateConfig.model_validate(
        {
            "llm": {"backend": "openai", "base_url": base, "model": "fake-model"},
            "concurrency": 64,
        }
    )
    started = time.perf_counter()
    run_async(Pipeline(cfg, load_taxonomy(), run, n).run())
    made = time.perf_counter() - started
    common = ["generate", "--out", str(run), "--backend", "openai", "--base-url", base]
    common += ["--model", "fake-model", "-q"]
    size = (run / "glan.sqlite").stat().st_size / 2**20
    print(f"N={n:,}: made in {made:.1f} s, glan.sqlite {size:.1f} MiB")
    for name, extra in (
        ("finished", ["-n", str(n)]),
        ("update", ["-n", str(n), "--set", "stages.answers.model=other", "--update"]),
        ("extend", ["-n", str(2 * n)]),
    ):
        if name not in cases:
            continue
        seconds, out = timed([*common, *extra, "--dry-run"], repeats)
        print(f"  dry run, {name:8}: {seconds:6.2f} s  ({summary(out)})")
    seconds, _ = timed([*common, "-n", str(n)], repeats)
    print(f"  real re-run, finished: {seconds:6.2f} s")
    copies = []
    for i in range(repeats):
        started = time.perf_counter()
        copy_decisions(run, work / f"copy{n}-{i}.sqlite")
        copies.append(time.perf_counter() - started)
    print(f"  copy of the decisions: {statistics.median(copies):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["finished", "update", "extend"])
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    server, base = start_server(0.0)
    try:
        with tempfile.TemporaryDirectory() as work:
            for n in args.pairs:
                bench(n, base, args.repeats, Path(work), args.cases)
    finally:
        server.kill()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
