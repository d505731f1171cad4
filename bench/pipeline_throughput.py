"""The whole pipeline against a 200 ms endpoint: does the tree keep the endpoint busy?

The fake server runs in its own process (its own core) with the schema-aware replier; the
pipeline runs here, pinned to one core, and a sampler records requests in flight every 50 ms.
Reported: requests, elapsed, ideal (requests x latency / concurrency), achieved / ideal, the
client's CPU per request, and in-flight by phase (start ramp, middle, tail), so a drop below C
shows where it happens. A second invocation re-runs the finished run (resume cost).

Usage: python bench/pipeline_throughput.py [--pairs 20000] [--concurrency 256] [--latency 0.2]
       [--default-gc] [--commit-every-turn]   (undo one of the two changes, to measure each)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import glan.pipeline
import glan.store
from glan.aio import run as run_async
from glan.config import GenerateConfig
from glan.pipeline import Pipeline, RunProgress
from glan.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).parent))
from client_throughput import free_port


def start_server(latency: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "glan.testing.fake_server", "--port", str(port)]
    cmd += ["--latency", str(latency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/models", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("fake server did not start")


async def measure(pipeline: Pipeline, every: float = 0.05) -> tuple[list[tuple[float, int]], float]:
    samples: list[tuple[float, int]] = []
    run = asyncio.ensure_future(pipeline.run())
    started = time.perf_counter()
    while not run.done():
        endpoints = getattr(pipeline, "endpoints", None)
        if endpoints:
            samples.append((time.perf_counter() - started, endpoints[0].limiter.in_flight))
        await asyncio.sleep(every)
    await run
    return samples, time.perf_counter() - started


def phase_report(samples: list[tuple[float, int]], concurrency: int) -> str:
    if not samples:
        return "no samples"
    n = len(samples)
    parts = {
        "start 10%": samples[: n // 10],
        "middle": samples[n // 10 : -n // 10],
        "tail 10%": samples[-n // 10 :],
    }
    out = []
    for name, part in parts.items():
        if part:
            values = [v for _, v in part]
            out.append(
                f"{name}: median {statistics.median(values):.0f}, min {min(values)} of {concurrency}"
            )
    return "; ".join(out)


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc), or 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--default-gc", action="store_true", help="no GC tuning for the run")
    parser.add_argument("--commit-every-turn", action="store_true", help="no 20 ms commit batching")
    args = parser.parse_args()
    if args.default_gc:
        glan.pipeline.long_run_gc = contextlib.nullcontext  # type: ignore[assignment]
    if args.commit_every_turn:
        glan.store.COMMIT_INTERVAL_S = 0.0
    proc, base = start_server(args.latency)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {1})  # the server gets its own core,
        os.sched_setaffinity(0, {0})  # the client the other
    try:
        cfg = GenerateConfig.model_validate(
            {
                "llm": {"backend": "openai", "base_url": base, "model": "bench"},
                "concurrency": args.concurrency,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            for label in ("fresh run", "re-run of the finished run"):
                progress = RunProgress()
                pipeline = Pipeline(cfg, load_taxonomy(), Path(tmp) / "run", args.pairs, progress)
                cpu0, server0 = time.process_time(), process_cpu(proc.pid)
                samples, elapsed = run_async(measure(pipeline))
                cpu = time.process_time() - cpu0
                server_cpu = process_cpu(proc.pid) - server0
                requests = sum(st.done for st in progress.stages.values())
                print(
                    f"== {label}: {args.pairs:,} pairs, C={args.concurrency}, {args.latency * 1000:.0f} ms"
                )
                if requests:
                    ideal = requests * args.latency / args.concurrency
                    print(
                        f"requests {requests:,} in {elapsed:.1f} s; ideal {ideal:.1f} s; "
                        f"achieved/ideal {ideal / elapsed:.3f}; CPU {cpu / requests * 1000:.3f} ms/request"
                    )
                    print(f"in flight: {phase_report(samples, args.concurrency)}")
                    mean = statistics.fmean(v for _, v in samples) if samples else 0.0
                    # Little's law: requests in flight = throughput x time each one holds a slot.
                    held = mean * elapsed / requests
                    print(
                        f"mean in flight {mean:.0f} of {args.concurrency} "
                        f"({mean / args.concurrency:.3f}); a slot is held {held * 1000:.0f} ms "
                        f"per request against the endpoint's {args.latency * 1000:.0f} ms"
                    )
                    print(
                        f"server CPU {server_cpu:.1f} s ({server_cpu / elapsed:.0%} of its core): "
                        "near 100% means the endpoint, not the client, set the pace"
                    )
                else:
                    print(f"0 requests in {elapsed:.2f} s (CPU {cpu:.2f} s)")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
