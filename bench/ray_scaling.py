"""The Ray executor against a 200 ms endpoint: does a cluster keep up with one process, and does
it grow with the endpoint?

1. Same C: C=256 in all, the local executor vs Ray with 1, 2 and 4 workers (goal: >= 0.9 of
   local; the endpoint, not Ray, should set the pace).
2. C per worker: the endpoint's capacity grown with the workers (C = 64 x K), K = 1, 2, 4
   (goal: throughput >= 0.9 x K of one worker's, as far as this machine can show it).
3. Admission alternatives: a Ray actor call per request (acquire + release) vs the leased
   blocks the executor uses (one sync per worker every 50 ms, whatever the request rate).

The fake server (schema-aware replier) runs in its own process. Client CPU is the CPU of every
process of this bench's tree but the server's: the driver, Ray's raylet, GCS and workers
(sampled every 0.5 s, so processes that exit between samples lose at most their last 0.5 s).

Usage: python bench/ray_scaling.py [--pairs 3000] [--latency 0.2] [--part 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from glan.config import GenerateConfig
from glan.executors import execute
from glan.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_throughput import start_server

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, exclude: int) -> dict[int, float]:
    """CPU seconds of every live process under `root` (itself included), but `exclude`;
    records each process's role in ROLE (driver, worker, or Ray's own daemons)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
    mine = {}
    for pid in cpu:
        p = pid
        while p and p != root and p != exclude:
            p = parents.get(p, 0)
        if p == root and pid != exclude:
            mine[pid] = cpu[pid]
            try:  # a Ray worker's title changes when it becomes an actor: read it each time
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                name = b""
            if pid == root:
                ROLE[pid] = "driver"
            elif name.startswith((b"ray::ShardWorker", b"ray::Authority", b"ray::Client")):
                ROLE[pid] = "workers"  # glan's actors (and the admission bench's)
            elif ROLE.get(pid) != "workers":
                ROLE[pid] = "ray"
    return mine


ROLE: dict[int, str] = {}


class CpuMeter:
    """Samples the tree's CPU; the total is the sum of each process's last value."""

    def __init__(self, exclude: int) -> None:
        self.exclude = exclude
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}

    def __enter__(self) -> CpuMeter:
        self.base = tree_cpu(os.getpid(), self.exclude)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self.seen.update(tree_cpu(os.getpid(), self.exclude))

    def now(self) -> float:
        """CPU used since the meter started, read now."""
        self.seen.update(tree_cpu(os.getpid(), self.exclude))
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.seen.update(tree_cpu(os.getpid(), self.exclude))
        used = {pid: v - self.base.get(pid, 0.0) for pid, v in self.seen.items()}
        self.total = sum(used.values())
        self.by_role = {
            role: sum(v for pid, v in used.items() if ROLE.get(pid) == role)
            for role in ("driver", "workers", "ray")
        }


def one_run(base: str, pairs: int, c: int, workers: int | None, tmp: Path, meter: CpuMeter) -> dict:
    executor = {"kind": "local"}
    if workers:
        executor = {"kind": "ray", "workers": workers, "worker_cpus": 0.25}
    cfg = GenerateConfig.model_validate(
        {
            "llm": {"backend": "openai", "base_url": base, "model": "bench"},
            "concurrency": c,
            "executor": executor,
        }
    )
    out = tmp / f"{executor['kind']}-{workers}-{c}-{time.monotonic_ns()}"
    first: list[tuple[float, int]] = []

    def at_first_poll(snapshot: dict) -> None:
        """Workers are up: what the run costs from here on is its steady state."""
        if not first:
            done = sum(
                stage[1]
                for w in snapshot["workers"].values()
                for shard in w["shards"].values()
                for stage in shard["stages"].values()
            )
            first.append((meter.now(), done))

    started = time.perf_counter()
    result = execute(cfg, load_taxonomy(), out, pairs, on_poll=at_first_poll)
    elapsed = time.perf_counter() - started
    m = result.manifest
    requests = sum(r["requests"] for s in m["usage_this_invocation"].values() for r in s.values())
    startup = m.get("worker_startup_s", 0.0)
    return {"requests": requests, "elapsed": elapsed, "startup": startup, "first": first}


def report(
    label: str, run: dict, meter: CpuMeter, c: int, latency: float, local: float | None
) -> float:
    requests, elapsed, startup = run["requests"], run["elapsed"], run["startup"]
    cpu = meter.total
    split = ", ".join(f"{k} {v / requests * 1000:.2f}" for k, v in meter.by_role.items() if v)
    steady = ""
    if run["first"]:
        cpu0, done0 = run["first"][0]
        steady = f"; after the workers are up {(cpu - cpu0) / (requests - done0) * 1000:.2f}"
    walk = elapsed - startup
    rate = requests / walk
    ideal = c / latency
    vs = f", {rate / local:.2f} of local" if local else ""
    print(
        f"{label:>14}: {requests:,} requests in {elapsed:.1f} s ({startup:.1f} s starting workers); "
        f"{rate:,.0f} req/s = {rate / ideal:.2f} of ideal {ideal:,.0f}{vs}; "
        f"client CPU {cpu / requests * 1000:.2f} ms/request ({split}){steady}",
        flush=True,
    )
    return rate


def admission_alternatives(ray, calls: int = 4000, concurrency: int = 64) -> None:
    """A per-request permit from an actor vs the leased block's local permit."""

    @ray.remote(num_cpus=0)
    class Semaphore:
        """The cheapest per-request authority: one call to take a permit, one to give it back
        (never refused here, so what is measured is the round trips, not contention)."""

        def __init__(self) -> None:
            self.free = 10**9

        def acquire(self) -> int:
            self.free -= 1
            return self.free

        def release(self) -> None:
            self.free += 1

    @ray.remote(num_cpus=0.25)
    class Client:
        async def per_request(self, sem, n: int) -> float:
            local = asyncio.Semaphore(concurrency)  # the client's own bound on what it asks

            async def one() -> None:
                async with local:
                    await sem.acquire.remote()
                    await sem.release.remote()

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return time.perf_counter() - started

        async def leased(self, n: int) -> float:
            from glan.executors.lease import LeasedAdmission, PermitAuthority
            from glan.llm import AdmissionSettings

            book = PermitAuthority(AdmissionSettings(concurrency=concurrency))

            async def sync(r: dict) -> dict:
                return book.sync("w", r)

            admission = LeasedAdmission(book.settings, sync)

            async def one() -> None:
                await admission.acquire()
                admission.release()
                admission.on_success()

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return time.perf_counter() - started

    sem, client = Semaphore.remote(), Client.remote()
    ray.get(client.leased.remote(10))
    with CpuMeter(exclude=-1) as meter:
        took = ray.get(client.per_request.remote(sem, calls))
    print(
        f"  per-request actor permit: {calls / took:,.0f} permits/s for the whole cluster, "
        f"{meter.total / calls * 1000:.2f} ms CPU per request (client + actor + raylet)"
    )
    with CpuMeter(exclude=-1) as meter:
        took = ray.get(client.leased.remote(calls * 10))
    print(
        f"  leased block, local permit: {calls * 10 / took:,.0f} permits/s per worker, "
        f"{meter.total / (calls * 10) * 1000:.4f} ms CPU per request (+ 20 syncs/s per worker)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--part", default="1,2,3")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run")
    args = parser.parse_args()
    parts = set(args.part.split(","))
    counts = [int(k) for k in args.workers.split(",")]
    import ray

    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    proc, base = start_server(args.latency)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    with CpuMeter(exclude=proc.pid) as idle:
        time.sleep(5)
    print(f"Ray idle (no run): {idle.total / 5:.2f} cores ({idle.by_role})")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "1" in parts:
                print(f"== same C=256, {args.pairs:,} pairs, {args.latency * 1000:.0f} ms endpoint")
                local = None
                for workers in (None, *counts):
                    with CpuMeter(exclude=proc.pid) as meter:
                        run = one_run(base, args.pairs, 256, workers, Path(tmp), meter)
                    label = "local" if workers is None else f"ray x{workers}"
                    rate = report(label, run, meter, 256, args.latency, local)
                    local = local or rate
            if "2" in parts:
                print("== C per worker: C = 64 x workers")
                for workers in counts:
                    with CpuMeter(exclude=proc.pid) as meter:
                        run = one_run(base, args.pairs, 64 * workers, workers, Path(tmp), meter)
                    report(f"ray x{workers}", run, meter, 64 * workers, args.latency, None)
            if "3" in parts:
                print("== admission: an actor call per request vs leased blocks")
                admission_alternatives(ray)
    finally:
        ray.shutdown()
        proc.kill()
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
