"""Peak memory (and tasks alive) of `glan generate` as N grows, against the fake server.

Each size runs in a fresh process (so its peak RSS is its own) against the schema-aware fake
server in another process at zero latency. Flat memory means the two peaks are close: records
stream to SQLite and out to JSONL; only run-wide bounded work is held in memory.

Usage: python bench/memory_scaling.py [--sizes 20000 200000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHILD = """
import asyncio, json, resource, sys, time
from pathlib import Path
from glan.aio import run
from glan.config import GenerateConfig
from glan.pipeline import Pipeline
from glan.taxonomy import load_taxonomy
out, n, url, conc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
cfg = GenerateConfig.model_validate(
    {"llm": {"backend": "openai", "base_url": url, "model": "bench"}, "concurrency": conc}
)
peak_tasks = 0

async def main():
    global peak_tasks
    async def sample():
        global peak_tasks
        while True:
            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0.05)
    sampler = asyncio.ensure_future(sample())
    try:
        return await Pipeline(cfg, load_taxonomy(), Path(out), n).run()
    finally:
        sampler.cancel()

t = time.perf_counter()
result = run(main())
print(json.dumps({
    "n": result.instructions,
    "seconds": time.perf_counter() - t,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_tasks": peak_tasks,
    "requests": sum(r["requests"] for m in result.manifest["usage"].values() for r in m.values()),
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "glan.testing.fake_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(server.pid, {1})
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(Path(tmp) / "run"),
                        str(n),
                        url,
                        str(args.concurrency),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    preexec_fn=(lambda: os.sched_setaffinity(0, {0}))
                    if hasattr(os, "sched_setaffinity")
                    else None,
                )
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                size = sum(p.stat().st_size for p in (Path(tmp) / "run").iterdir())
                print(
                    f"N={row['n']:>7,}  {row['requests']:>8,} requests  {row['seconds']:7.1f} s  "
                    f"{row['requests'] / row['seconds']:6.0f} req/s  peak RSS {row['peak_rss_mb']:6.1f} MB"
                    f"  run dir {size / 1e6:6.1f} MB  tasks alive at most {row['peak_tasks']:,}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    print(
        f"(bench process itself: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
