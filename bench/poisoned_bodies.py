"""The same hostile run, several times: do poisoned bodies make the records a matter of luck?

Against the fake server (in this process) with `--poisoned` of the request bodies (chosen by
a hash of the body) always answered HTTP 500 with the same text as its random 500s,
`glan generate -n N` at concurrency C (the tests' settings, glan.testing.runs.config_for:
max_retries 8) is run `--tries` times, each into a fresh directory; a run that ends short is
re-run once with the same command. `--seed` is the run's seed, which chooses the bodies.
Reported per try: the status (and the re-run's), seconds, requests the server saw (probes
included), poisoned answers, units that gave up (deferred or replaced: the manifest's
failures), and a hash of instructions.jsonl; then the counts of complete and short runs, the
distinct outputs, and the median and largest time.

Usage: python bench/poisoned_bodies.py [--pairs 20] [--concurrency 8] [--poisoned 0.1]
       [--tries 6] [--latency 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from glan.api import generate
from glan.llm import EndpointDown
from glan.testing import runs
from glan.testing.fake_server import FakeServer


def one_command(out: Path, args: argparse.Namespace, server: FakeServer) -> tuple[str, float]:
    """One `glan generate` into `out`: its status (stopped: the breaker opened) and seconds."""
    cfg = runs.config_for(server, concurrency=args.concurrency, seed=args.seed)
    started = time.monotonic()
    status = "stopped"
    with contextlib.suppress(EndpointDown):
        status = generate(out, args.pairs, cfg).manifest["status"]
    return status, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poisoned", type=float, default=0.1)
    parser.add_argument("--tries", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (which bodies)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average (1 min) at start: {os.getloadavg()[0]:.1f}")
    print(
        f"N={args.pairs}, C={args.concurrency}, {args.poisoned:.0%} poisoned bodies, "
        f"{args.latency * 1000:.0f} ms latency\n"
    )
    print("| try | status | seconds | re-run | requests | poisoned 500s | given up | output |")
    print("|---:|---|---:|---|---:|---:|---:|---|")
    statuses, seconds, outputs = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.tries):
            out = Path(tmp) / f"run{i}"
            with FakeServer(poisoned_rate=args.poisoned, latency_s=args.latency) as server:
                status, elapsed = one_command(out, args, server)
                again = "-"
                if status != "complete":
                    status_again, seconds_again = one_command(out, args, server)
                    again = f"{status_again}, {seconds_again:.1f} s"
                requests, poisoned = server.requests, server.by_status["poisoned"]
            manifest = orjson.loads((out / "manifest.json").read_bytes())
            given_up = sum(manifest["failures"].values())
            digest = hashlib.sha256((out / "instructions.jsonl").read_bytes()).hexdigest()[:12]
            statuses.append(status)
            seconds.append(elapsed)
            outputs.add(digest)
            print(
                f"| {i + 1} | {status} | {elapsed:.1f} | {again} | {requests} | {poisoned} | "
                f"{given_up} | {digest} |"
            )
    print(
        f"\ncomplete {statuses.count('complete')}/{args.tries}, short "
        f"{statuses.count('short')}/{args.tries}, distinct outputs {len(outputs)}, seconds: "
        f"median {statistics.median(seconds):.1f}, max {max(seconds):.1f}"
    )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
