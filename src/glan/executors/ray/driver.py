"""The Ray driver: plan, shard, hand shards to workers as they free up, show progress, publish.

- The plan is cut into many more shards than workers, balanced by quota
  (glan.executors.layout); the driver keeps the queue, and a worker with a free slot gets the
  next shard (largest first, so the tail is short). A shard whose worker died is re-issued to
  a fresh worker and resumes from the state it staged.
- One authority actor per HTTP endpoint (glan.executors.lease) holds the cluster's admission:
  `concurrency` is the number in flight at that endpoint across all workers.
- Workers first prove they see the run directory; the records are published by the driver, in
  tree order, from every shard's state, exactly as a local run publishes its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from glan import __version__
from glan.config import STAGES, GenerateConfig
from glan.errors import UserError
from glan.executors.layout import shard_layout
from glan.executors.ray.display import ClusterProgress
from glan.executors.ray.worker import PROBE_FILE, Authority, ShardWorker
from glan.llm.settings import BATCH_KINDS
from glan.llm.usage import sum_cost
from glan.pipeline import Pipeline, RunResult
from glan.run.files import atomic_write_text
from glan.run.rundir import STATE_FILE, RunDir
from glan.run.spend import spend_totals
from glan.run.state import RunState
from glan.run.stores import refuse_live_batches, run_stores, shard_dir, spread_state
from glan.taxonomy import Taxonomy
from glan.tree.progress import RunProgress

POLL_S = 1.0
MAX_ATTEMPTS = 4  # a shard whose workers keep dying stops the run after this many
AUTHORITY_VERSION = 1  # bump when the authority's protocol changes: an old actor is not reused


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs Ray: pip install 'glan[ray]' (on every node of the cluster)"
        ) from None
    return ray


def connect(ray: Any, address: str | None) -> None:
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,  # glan's display is the run's voice, not Ray's INFO
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local one"
        raise UserError(f"cannot reach the Ray cluster at {where}: {exc}") from None


class RayRun:
    def __init__(
        self,
        config: GenerateConfig,
        taxonomy: Taxonomy,
        out_dir: Path,
        target: int,
        progress: RunProgress | None = None,
        update: bool = False,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_poll`: called with each snapshot of the workers (~1/s; tests kill one there)."""
        self.ray = require_ray()
        self.pipeline = Pipeline(config, taxonomy, out_dir, target, update=update)
        self.cfg = self.pipeline.cfg
        self.taxonomy = taxonomy
        self.out_dir = out_dir
        self.shards_dir = out_dir / "shards"
        self.target = target
        self.update = update
        self.display = ClusterProgress(progress or RunProgress())
        self.on_poll = on_poll
        # Shards a worker runs at once: a shard is a deep chain (listing, syllabus, question,
        # answer), so one at a time would leave the endpoint idle while it ramps and drains;
        # half of a worker's share runs at once and the rest is pulled as those finish. A shard
        # that sends batches spends its time waiting for them: all of them go at once.
        per_worker = self.cfg.executor.shards_per_worker
        self.sends_batches = any(self.cfg.backend_for(s).backend in BATCH_KINDS for s in STAGES)
        self.slots = per_worker if self.sends_batches else max(1, per_worker // 2)
        self.invocation = uuid.uuid4().hex  # every shard's spend is written down under it

    # ---- setup -------------------------------------------------------------------------------
    def _worker_count(self) -> int:
        ex = self.cfg.executor
        cpus = float(self.ray.cluster_resources().get("CPU", 0))
        workers = ex.workers or max(1, int(cpus // ex.worker_cpus))
        if workers * ex.worker_cpus > cpus:
            raise UserError(
                f"--workers {workers} at {ex.worker_cpus:g} CPU each needs "
                f"{workers * ex.worker_cpus:g} CPUs; the Ray cluster has {cpus:g} "
                "(lower --workers or set executor.worker_cpus)"
            )
        return workers

    def _authorities(self) -> dict[tuple[str, ...], Any]:
        """One named authority per HTTP endpoint. An in-process model keeps its own, and so
        does a batch API: what it holds open are lines waiting in batches, not requests at the
        endpoint (each worker's are bounded by batch.max_open_requests)."""
        settings = self.pipeline.admission_settings().model_dump()
        run = hashlib.sha256(str(self.out_dir.resolve()).encode()).hexdigest()[:12]
        actor = self.ray.remote(num_cpus=0, max_restarts=0)(Authority)
        authorities = {}
        for stage in STAGES:
            backend = self.cfg.backend_for(stage)
            identity = backend.identity()
            if backend.backend in ("local", *BATCH_KINDS) or identity in authorities:
                continue
            key = hashlib.sha256(repr(identity).encode()).hexdigest()[:12]
            authorities[identity] = actor.options(
                name=f"glan-admission-v{AUTHORITY_VERSION}-{run}-{key}-{secrets.token_hex(3)}",
            ).remote(settings)
        return authorities

    def _start_workers(self, indices: list[int]) -> dict[int, Any]:
        """Start workers (at once: an actor takes a second or two to come up) and have each
        prove it sees the run directory."""
        ex = self.cfg.executor
        actor = self.ray.remote(
            num_cpus=ex.worker_cpus,
            max_restarts=0,
            max_concurrency=self.slots + 4,
            scheduling_strategy="SPREAD",
        )(ShardWorker)
        handles = {i: actor.remote(f"w{i}", self.authorities) for i in indices}
        try:
            for handle in handles.values():
                where = self.ray.get(handle.where.remote())
                problem = self.ray.get(handle.probe.remote(str(self.shards_dir), self.token))
                if problem is not None:
                    raise UserError(
                        f"Ray worker on {where['host']} (pid {where['pid']}) cannot use the run "
                        f"directory {self.shards_dir}: {problem}. Every worker must see --out: "
                        "use a shared filesystem mounted at the same path on every node "
                        "(docs/scale-out.md)"
                    )
        except BaseException:
            for handle in handles.values():
                self.ray.kill(handle)
            raise
        return handles

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        run_dir = RunDir(self.out_dir)
        with run_dir.opened():
            inputs = self.pipeline.inputs()
            run_dir.changed_stages(inputs, self.update)  # refused here, before any worker
            refuse_live_batches(self.out_dir)  # and this, before the cluster is reached
            self.previous = run_dir.read_manifest() or {}
            plan = self.pipeline.full_plan
            self.display.start(plan, self.cfg.subjects_mode == "two_turn")
            connect(self.ray, self.cfg.executor.ray_address)
            workers = self._worker_count()
            self.display.workers = workers
            shards = shard_layout(
                self.shards_dir, plan, workers, self.cfg.executor.shards_per_worker
            )
            # What a local run staged goes to the shards, before the inputs are recorded: each
            # shard compares them with its own (glan.run.stores).
            spread_state(self.out_dir, shards)
            main_store = self.out_dir / STATE_FILE
            self.cache_fallback = str(main_store) if main_store.is_file() else None
            run_dir.record_inputs(inputs)
            atomic_write_text(self.out_dir / "taxonomy.yaml", self.taxonomy.to_yaml())
            self.token = secrets.token_hex(8)
            atomic_write_text(self.shards_dir / PROBE_FILE, self.token)
            self.authorities = self._authorities()
            started = time.time()
            self.summaries: dict[int, dict[str, Any]] = {}
            self.attempts: dict[int, int] = {}
            status = "stopped"
            try:
                self._drive(shards, workers)
                status = "finished"
            finally:
                try:
                    manifest = self._finish(run_dir, shards, status, started, workers)
                finally:
                    for authority in self.authorities.values():
                        self.ray.kill(authority)
            return RunResult(
                self.out_dir, manifest["counts"]["instructions"], self.target, manifest
            )

    def _drive(self, shards: dict[int, list[str]], count: int) -> None:
        ray = self.ray
        quota = {d.discipline.path: d.quota for d in self.pipeline.full_plan.disciplines}
        queue = deque(sorted(shards, key=lambda s: (-sum(quota[p] for p in shards[s]), s)))
        begun = time.monotonic()
        workers = self._start_workers(list(range(count)))
        self.startup_s = time.monotonic() - begun
        # From here every worker this loop started is killed on the way out, whatever happens.
        busy: dict[int, int] = dict.fromkeys(workers, 0)
        running: dict[Any, tuple[int, Any, int]] = {}
        next_poll = time.monotonic()
        config = ray.put(self.cfg.model_dump(mode="json"))
        taxonomy = ray.put(self.taxonomy)
        try:
            while queue or running:
                for i in workers:
                    while queue and busy[i] < self.slots:
                        shard = queue.popleft()
                        self.attempts[shard] = self.attempts.get(shard, 0) + 1
                        ref = workers[i].run_shard.remote(
                            shard,
                            str(shard_dir(self.out_dir, shard)),
                            config,
                            taxonomy,
                            self.target,
                            shards[shard],
                            self.update,
                            self.invocation,
                            self.cache_fallback,
                        )
                        running[ref] = (i, workers[i], shard)
                        busy[i] += 1
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    i, handle, shard = running.pop(ref)
                    busy[i] -= 1
                    try:
                        self.summaries[shard] = ray.get(ref)
                        self.display.shard_done(self.summaries[shard])
                    except ray.exceptions.RayActorError:
                        # The worker died (killed, OOM, node lost): a fresh one resumes the
                        # shard from its staged state.
                        if self.attempts[shard] >= MAX_ATTEMPTS:
                            raise UserError(
                                f"shard {shard:03d} lost its worker {self.attempts[shard]} "
                                "times; re-run the same command to resume"
                            ) from None
                        queue.appendleft(shard)
                        if workers[i] is handle:
                            self.display.worker_lost()
                            workers[i] = self._start_workers([i])[i]
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause
                        if isinstance(cause, UserError):  # the endpoint is down, a bad input:
                            raise type(cause)(str(cause)) from None  # one line, as locally
                        raise
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_S
                    self._poll(workers)
        finally:
            for handle in workers.values():
                ray.kill(handle)

    def _poll(self, workers: dict[int, Any]) -> None:
        ray = self.ray
        refs = {w.snapshot.remote(): i for i, w in workers.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
        snapshots: dict[int, dict[str, Any]] = {}
        for ref in ready:
            try:
                snapshots[refs[ref]] = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a dead worker shows up in _drive
        limits = self._limits()
        self.display.update(snapshots, limits)
        if self.on_poll is not None:
            self.on_poll({"workers": snapshots, "authorities": limits})

    def _limits(self) -> list[dict[str, Any]]:
        """The authorities' figures (limit, epoch, rate limits, in-flight high water)."""
        refs = [a.snapshot.remote() for a in self.authorities.values()]
        with contextlib.suppress(self.ray.exceptions.RayError):
            return self.ray.get(refs, timeout=POLL_S * 5)
        return []

    # ---- publishing --------------------------------------------------------------------------
    def _finish(
        self,
        run_dir: RunDir,
        shards: dict[int, list[str]],
        status: str,
        started: float,
        workers: int,
    ) -> dict[str, Any]:
        plan = self.pipeline.full_plan
        where = {p: n for n, paths in shards.items() for p in paths}
        states = {n: RunState(shard_dir(self.out_dir, n) / STATE_FILE) for n in shards}
        try:
            published = run_dir.publish(
                plan,
                {d.discipline.path: states[where[d.discipline.path]] for d in plan.disciplines},
            )
        finally:
            for state in states.values():
                state.close()
        made = published["counts"]["instructions"]
        planned = sum(d.quota for d in plan.disciplines)
        summaries = [self.summaries[n] for n in sorted(self.summaries)]
        if status == "finished":
            status = "complete" if made >= planned else "short"
        # Every shard attempt wrote its spend down as it went, a killed worker's included.
        spent = spend_totals(run_stores(self.out_dir), self.previous, self.invocation)
        limits = self._limits()
        manifest = {
            "glan_version": __version__,
            "status": status,
            "target": self.target,
            "missing": max(0, planned - made),
            "deferred_units": sum(s["deferred_units"] for s in summaries),
            "deferred_too_large": _too_large(summaries),
            "seed": self.cfg.seed,
            "shard": None,
            "executor": "ray",
            "workers": workers,
            "worker_startup_s": round(getattr(self, "startup_s", 0.0), 3),
            **published,
            "planned_calls": plan.calls(self.cfg.subjects_mode == "two_turn"),
            "disciplines": len(plan.disciplines),
            "resumed_pairs": sum(s["resumed_pairs"] for s in summaries),
            "failures": {
                stage: sum(s["failures"].get(stage, 0) for s in summaries) for stage in STAGES
            },
            "retries": sum(s["retries"] for s in summaries),
            "rate_limited": sum(s["rate_limited"] for s in summaries),
            "concurrency_cuts": sum(a["cuts"] for a in limits),
            "leased_permits_high_water": max((a["high_water"] for a in limits), default=0),
            **spent,
            "cost_usd": round(sum_cost(spent["usage"]), 6),
            **merged_notes(self.previous, summaries),
            "shards": [
                {
                    "shard": s["shard"],
                    "disciplines": len(shards[s["shard"]]),
                    "planned": s["planned"],
                    "made": s["made"],
                    "status": s["status"],
                    "attempts": self.attempts.get(s["shard"], 1),
                    "worker": s["worker"],
                    "host": s["host"],
                    "elapsed_s": s["elapsed_s"],
                    "requests": sum(
                        r["requests"]
                        for m in s["usage_this_invocation"].values()
                        for r in m.values()
                    ),
                }
                for s in summaries
            ],
            "taxonomy_fingerprint": self.taxonomy.fingerprint(),
            "inputs": self.pipeline.inputs(),
            "config": self.cfg.model_dump(mode="json"),
            "started_at": started,
            "elapsed_s": round(time.time() - started, 3),
        }
        run_dir.write_manifest(manifest)
        return manifest


def merged_notes(previous: dict[str, Any], summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' notes on their endpoints (glan.pipeline.Pipeline.notes), once each: the
    shards a worker runs share its backends, so each reports the same changes."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for key in ("schema_downgrades", "parameter_changes", "batch_faults"):
        seen: set[bytes] = set()
        notes = []
        for note in (n for s in summaries for n in s.get("notes", {}).get(key, [])):
            identity = orjson.dumps(note, option=orjson.OPT_SORT_KEYS)
            if identity not in seen:
                seen.add(identity)
                notes.append(note)
        merged[key] = [*previous.get(key, []), *notes]
    return merged


def _too_large(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shards' requests deferred as too large for their endpoint, summed per endpoint and
    error (the local run's manifest key)."""
    counts: dict[tuple[str, str], int] = {}
    for summary in summaries:
        for row in summary.get("deferred_too_large") or ():
            key = (row["endpoint"], row["error"])
            counts[key] = counts.get(key, 0) + row["requests"]
    return [{"endpoint": e, "error": err, "requests": n} for (e, err), n in counts.items()]
