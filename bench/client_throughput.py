"""Client throughput against a fast local mock endpoint (the fake server, in its own process).

Measures the whole client path: admission, HTTP, JSON extraction, schema validation, cache
writes to SQLite and usage accounting, for 20,000 distinct requests.

  1. zero latency, client pinned to one core: requests/s and CPU per request;
  2. 256 in flight, 200 ms latency: achieved / ideal throughput (ideal = 256 / 0.2 = 1280 req/s).

A bare aiohttp loop is measured the same way as the ceiling for an asyncio client.

Usage: python bench/client_throughput.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson

from glan.aio import bounded_map
from glan.aio import run as run_async
from glan.llm import AdmissionSettings, ChatRequest, LLMClient, user
from glan.llm.openai_http import OpenAIBackend
from glan.store import ResponseCache

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "tags"],
}
REPLY = '{"name": "photosynthesis", "tags": ["biology", "plants"]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "glan.testing.fake_server", "--port", str(port)]
    cmd += ["--latency", str(latency), "--fixed-reply", REPLY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {1})
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("fake server did not start")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_glan(url: str, n: int, concurrency: int, cache_dir: Path) -> tuple[float, float]:
    backend = OpenAIBackend(model="bench", base_url=url, max_concurrency=concurrency)
    client = LLMClient(
        backend,
        cache=ResponseCache(cache_dir / f"cache-{time.time_ns()}.sqlite"),
        admission=AdmissionSettings(concurrency=concurrency),
    )
    await client.ensure_ready()
    requests = [
        ChatRequest(messages=user(f"Question {i}: explain item {i}."), json_schema=SCHEMA, tag="b")
        for i in range(n)
    ]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    replies = await bounded_map(client.chat, requests, window=2 * concurrency)
    await client.aclose()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    assert all(r.parsed["name"] == "photosynthesis" for r in replies)
    assert client.usage.total().requests == n
    return wall, cpu


async def run_bare_aiohttp(url: str, n: int, concurrency: int) -> tuple[float, float]:
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            body = orjson.dumps({"model": "b", "messages": [{"role": "user", "content": f"q{i}"}]})
            async with sem, session.post(f"{url}/chat/completions", data=body) as resp:
                orjson.loads(await resp.read())

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, cpu_seconds() - cpu0


def measure(label: str, latency: float, concurrency: int, n: int, repeats: int) -> dict:
    proc, url = start_server(latency)
    try:
        rows = {"glan": [], "bare aiohttp": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                rows["glan"].append(run_async(run_glan(url, n, concurrency, Path(tmp))))
                rows["bare aiohttp"].append(run_async(run_bare_aiohttp(url, n, concurrency)))
    finally:
        proc.terminate()
        proc.wait()
    out = {}
    for name, runs in rows.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        out[name] = {"req_s": n / wall, "cpu_ms": 1000 * cpu / n}
        print(
            f"{label:<34} {name:<13} {n / wall:8.0f} req/s  {1000 * cpu / n:.3f} ms CPU/req"
            + (f"  {n / wall / (concurrency / latency):.3f} of ideal" if latency else "")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # the client gets one core; the server the other
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}"
    )
    measure("zero latency, 64 in flight", 0.0, 64, args.requests, args.repeats)
    measure("200 ms latency, 256 in flight", 0.2, 256, args.requests, args.repeats)


if __name__ == "__main__":
    main()
