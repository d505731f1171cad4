"""The batch transport's own costs: memory per open request, CPU per request, batches per run.

Against the fake batch server in the same process (its copy of every line included, so the
figures are upper bounds for glan's side). Three measures:
- N requests held open at once (the server keeps the batch in progress): RSS growth per request;
- the same N answered: CPU per request (client and fake together);
- a whole run by batch: how many batches it took (one per tree level without failures).

Usage: python bench/batch_transport.py [--open 50000] [--pairs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path

from glan.api import generate
from glan.llm import ChatRequest, LLMClient, user
from glan.llm.batch.options import BatchOptions
from glan.llm.settings import OpenAIBatchSettings, create_backend
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.runs import batch_config_for

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def open_requests(n: int, workdir: Path) -> None:
    server = FakeBatchServer().start()
    server.hold = True
    settings = OpenAIBatchSettings(base_url=server.base_url, model="bench")
    options = BatchOptions(poll_seconds=0.2, flush_idle_seconds=0.2)
    client = LLMClient(create_backend(settings, batch=options, ledger=workdir / "glan.sqlite"))
    await client.ensure_ready()
    requests = [
        ChatRequest(
            messages=user(f"Answer question {i} about entropy in closed systems, in detail."),
            json_schema=SCHEMA,
            max_tokens=1536,
        )
        for i in range(n)
    ]
    gc.collect()
    before, cpu = rss_mb(), time.process_time()
    replies = asyncio.ensure_future(asyncio.gather(*(client.chat(r) for r in requests)))
    while server.lines_submitted < n:
        await asyncio.sleep(0.1)
    gc.collect()
    held = rss_mb()
    server.hold = False
    await replies
    cpu = time.process_time() - cpu
    await client.aclose()
    server.stop()
    print(
        f"{n:,} open requests: RSS +{held - before:.0f} MB ({(held - before) * 1e3 / n:.1f} KB "
        f"each); {cpu * 1e6 / n:.0f} us CPU per request, {len(server.batches)} batches"
    )


def batch_sizes(pairs: int, workdir: Path) -> list[int]:
    """The lines of each batch a whole run of `pairs` sent, in the order they were created."""
    with FakeBatchServer() as server:
        assert generate(workdir / "run", pairs, batch_config_for(server)).instructions == pairs
    return [len(b.lines) for b in server.batches.values()]


def whole_run(pairs: int, workdir: Path) -> None:
    started = time.perf_counter()
    sizes = batch_sizes(pairs, workdir)
    seconds = time.perf_counter() - started
    print(f"{pairs:,} pairs by batch: {len(sizes)} batches {sizes}, {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=50_000)
    parser.add_argument("--pairs", type=int, default=2_000)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(open_requests(args.open, Path(tmp)))
        whole_run(args.pairs, Path(tmp))


if __name__ == "__main__":
    main()
