"""What endpoint trouble costs in time: the timings the tests prove by counting instead.

The tests (tests/test_rate_limits.py, test_resume_and_shards.py, test_reliability.py,
test_body_faults.py) count requests and retries, which no machine load can change; how long
each scenario takes is measured here, against the fake server on loopback, in one process:

1. a burst of 64 starting inside a 1 s rate-limit window (Retry-After 1 s): time to finish;
2. an endpoint that answers only 429 (Retry-After 0.1 s), breaker_window_s=1.5: time to stop;
3. 200 requests, 5% of bodies always HTTP 500, 50 ms latency, C=16, 0.5 s backoff base:
   time against the endpoint's own (200 / 16 x 50 ms);
4. a 300-pair run, 5% poisoned bodies, 20 ms latency, C=32: time against the same run with
   no poisoned body; and with 25% of requests answered 503 at random besides (a busy
   gateway's errors, which name nothing of a body), against the 503s alone;
5. an endpoint that breaks after 20 pairs (HTTP 500, 429, or connections refused), breaker
   window 1 s: time from the break to the stop.

Usage: python bench/failure_costs.py
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import threading
import time
from pathlib import Path

from glan.api import generate
from glan.llm import AdmissionSettings, ChatRequest, EndpointDown, LLMClient, RequestFailed, user
from glan.llm.openai_http import OpenAIBackend
from glan.testing import runs
from glan.testing.fake_server import FakeServer

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "default_retry_after_s": 0.05}


def client_for(server: FakeServer, **admission) -> LLMClient:
    backend = OpenAIBackend(model="fake-model", base_url=server.base_url, timeout_s=5.0)
    settings = {"concurrency": 16, "breaker_failures": 8, **FAST, **admission}
    return LLMClient(backend, admission=AdmissionSettings(**settings))


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=user(text), max_tokens=64)


async def burst_in_window() -> float:
    with FakeServer() as server:
        server.rate_limit_for(1.0, retry_after=1.0)
        client = client_for(server, concurrency=64, breaker_window_s=30.0)
        started = time.monotonic()
        await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(64)))
        elapsed = time.monotonic() - started
        await client.aclose()
    return elapsed


async def only_rate_limits() -> float:
    with FakeServer() as server:
        server.rate_limit_for(math.inf, retry_after=0.1)
        client = client_for(server, concurrency=8, breaker_window_s=1.5)
        started = time.monotonic()
        with contextlib.suppress(EndpointDown):
            await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(8)))
        elapsed = time.monotonic() - started
        await client.aclose()
    return elapsed


async def poisoned_requests() -> float:
    with FakeServer(poisoned_rate=0.05, latency_s=0.05) as server:
        client = client_for(
            server, concurrency=16, backoff_base_s=0.5, backoff_max_s=30.0, breaker_failures=50
        )

        async def one(i: int) -> None:
            with contextlib.suppress(RequestFailed):
                await client.chat(ask(f"question {i}"))

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(200)))
        elapsed = time.monotonic() - started
        await client.aclose()
    return elapsed


def pipeline_run(poisoned_rate: float, out: Path, gateway_errors: float = 0.0) -> float:
    """`gateway_errors`: the share of requests answered 503 at random (no Retry-After)."""
    faults = {"503": gateway_errors} if gateway_errors else {}
    server = FakeServer(latency_s=0.02, poisoned_rate=poisoned_rate, fault_rates=faults).start()
    try:
        cfg = runs.config_for(server, concurrency=32, max_retries=6, breaker_window_s=30)
        started = time.monotonic()
        generate(out, 300, cfg)
        return time.monotonic() - started
    finally:
        server.stop()


def stop_after_break(fault: str, out: Path) -> float:
    server = FakeServer(latency_s=0.05).start()
    cfg = runs.config_for(server, breaker_failures=5, breaker_window_s=1.0, max_retries=3)
    broke_at: list[float] = []

    def break_mid_run() -> None:
        if broke_at or runs.staged_pairs(out) < 20:
            return
        broke_at.append(time.monotonic())
        if fault == "refused":
            threading.Thread(target=server.stop).start()
        else:
            server.fault_rates = {fault: 1.0}

    server.on_request = break_mid_run
    with contextlib.suppress(EndpointDown):
        generate(out, 200, cfg)
    stopped = time.monotonic()
    server.stop()
    return stopped - broke_at[0]


def main() -> None:
    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, load average (1 min) at start: {load:.1f}\n")
    print("| scenario | seconds | for scale |\n|---|---:|---|")
    print(f"| burst of 64 inside a 1 s 429 window | {asyncio.run(burst_in_window()):.2f} | 1 s |")
    print(f"| only 429s, breaker_window_s=1.5 | {asyncio.run(only_rate_limits()):.2f} | 1.5 s |")
    poisoned = asyncio.run(poisoned_requests())
    print(f"| 200 requests, 5% poisoned, C=16, 50 ms | {poisoned:.2f} | endpoint 0.62 s |")
    with tempfile.TemporaryDirectory() as tmp:
        clean = pipeline_run(0.0, Path(tmp) / "clean")
        dirty = pipeline_run(0.05, Path(tmp) / "poisoned")
        print(f"| 300 pairs, 5% poisoned, C=32, 20 ms | {dirty:.2f} | no poison {clean:.2f} s |")
        gateway = pipeline_run(0.0, Path(tmp) / "gateway", gateway_errors=0.25)
        both = pipeline_run(0.05, Path(tmp) / "both", gateway_errors=0.25)
        print(
            f"| the same, and 25% random 503s | {both:.2f} | 503s alone {gateway:.2f} s, "
            f"neither {clean:.2f} s |"
        )
        for fault in ("500", "429", "refused"):
            seconds = stop_after_break(fault, Path(tmp) / f"down-{fault}")
            print(
                f"| endpoint down ({fault}) mid-run: break to stop | {seconds:.2f} | window 1 s |"
            )
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
