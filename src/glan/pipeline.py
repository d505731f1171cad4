"""The GLAN pipeline: plan, clients, the tree walk and publishing, for one run directory.

Each stage is a request builder and a reply parser (glan.stages); the walk (glan.tree.walk)
decides what to ask and replaces failures in the stream; this module sends the requests through
one LLM client per endpoint (cache, admission, validation) and keeps the run directory
(glan.run.rundir) and its staged state (glan.run.state). A re-run reads the state and asks only
what is missing; the run is a function of (config, taxonomy, seed) and the replies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from glan import __version__
from glan.aio import long_run_gc
from glan.config import STAGES, GenerateConfig, StageName
from glan.errors import UserError
from glan.llm import (
    Admission,
    AdmissionSettings,
    Backend,
    ChatRequest,
    ChatResponse,
    LLMClient,
    LocalAdmission,
    RequestFailed,
    UsageLedger,
    create_backend,
)
from glan.llm.usage import sum_cost
from glan.planner import Plan, make_plan
from glan.run.files import atomic_write_text
from glan.run.rundir import STATE_FILE, RunDir
from glan.run.spend import SpendLog, spend_totals
from glan.run.stores import RunReplies, fold_shards
from glan.stages.errors import Rejected
from glan.store import ResponseCache
from glan.taxonomy import Taxonomy
from glan.tree.progress import RunProgress, StageProgress, merge_batch_states
from glan.tree.walk import GaveUp, TreeWalk

T = TypeVar("T")
AdmissionFactory = Callable[[tuple[str, ...], AdmissionSettings], Admission]
#: Walks of the tree per invocation while units are deferred (see Pipeline._walk_passes).
MAX_PASSES = 10
BackendFactory = Callable[[Any, int], Backend | None]

__all__ = ["Pipeline", "RunProgress", "RunResult", "StageProgress"]


@dataclass
class RunResult:
    out_dir: Path
    instructions: int
    target: int
    manifest: dict[str, Any]


class Pipeline:
    def __init__(
        self,
        config: GenerateConfig,
        taxonomy: Taxonomy,
        out_dir: Path,
        target: int,
        progress: RunProgress | None = None,
        update: bool = False,
        shard: tuple[int, int] | None = None,
        admission_factory: AdmissionFactory | None = None,
        only: Collection[str] | None = None,
        backend_factory: BackendFactory | None = None,
        invocation: str | None = None,
        cache_fallback: Path | None = None,
    ) -> None:
        """`admission_factory`: builds the admission of an endpoint (its identity, its local
        settings); executors that share one limit across processes pass theirs.
        `backend_factory`: builds (or lends) an endpoint's backend from its settings and the
        concurrency, e.g. one connection pool for all the shards a worker runs; None from it
        means the pipeline's own (`own_backend`).
        `only`: make only these disciplines (by path), a cluster executor's shard of the plan.
        `invocation`: the command this pipeline is part of (a cluster's shards share the
        driver's), under which its spend is written down (glan.run.spend).
        `cache_fallback`: a store whose replies this pipeline reads and never writes (a Ray
        shard's view of what its run kept before it was cut into shards: glan.run.stores)."""
        if target <= 0:
            raise UserError(f"-n must be a positive number of pairs, got {target}")
        self.cfg = config.adapted()
        self.taxonomy = taxonomy
        taxonomy.check()  # what `glan taxonomy validate` refuses, a run refuses too
        disciplines = taxonomy.disciplines()
        self.full_plan: Plan = make_plan(target, disciplines, self.cfg)
        self.plan = self.full_plan if shard is None else self.full_plan.shard(*shard)
        if only is not None:
            self.plan = self.plan.subset(only)
        self.shard = shard
        self.out_dir = out_dir
        self.target = target
        self.update = update
        self.progress = progress or RunProgress()
        self.progress.target = sum(d.quota for d in self.plan.disciplines)
        self.usage = UsageLedger(self.cfg.prices)
        self.progress.usage = self.usage
        calls = self.plan.calls(self.cfg.subjects_mode == "two_turn")
        for stage, n in calls.items():
            self.progress.stages[stage].planned = n
        self.failure_examples: dict[str, list[str]] = {}
        self.batch_faults: list[dict[str, Any]] = []  # what batch providers did (manifest)
        self.admission_factory = admission_factory
        self.backend_factory = backend_factory
        self.invocation = invocation or uuid.uuid4().hex
        self.cache_fallback = cache_fallback
        self._spend: SpendLog | None = None  # the usage written down as it changes (run())

    def inputs(self) -> dict[str, Any]:
        """What shapes this run's records (compared on every re-run: glan.run.rundir)."""
        return {"taxonomy": self.taxonomy.fingerprint(), **self.cfg.stage_inputs()}

    # ---- clients -------------------------------------------------------------------------
    def own_backend(self, settings: Any, concurrency: int) -> Backend:
        """The default: a backend of its own for each endpoint; batch transports keep their
        ledger in this pipeline's store (a Ray shard's is the shard's: glan.run.stores)."""
        return create_backend(
            settings,
            concurrency=concurrency,
            batch=self.cfg.batch,
            ledger=self.out_dir / STATE_FILE,
        )

    def admission_settings(self) -> AdmissionSettings:
        return AdmissionSettings(
            concurrency=self.cfg.concurrency,
            max_retries=self.cfg.max_retries,
            breaker_failures=self.cfg.breaker_failures,
            breaker_window_s=self.cfg.breaker_window_s,
        )

    def _make_clients(
        self, cache: ResponseCache, earlier: RunReplies | None = None
    ) -> dict[StageName, LLMClient]:
        """One client per distinct endpoint, shared by the stages that use it (one admission).
        A backend says how many requests its transport takes in flight (the HTTP backend: the
        configured concurrency; the embedded model: one); admission is built here, or given by
        the executor (one authority per endpoint for a whole cluster)."""
        settings = self.admission_settings()
        by_identity: dict[tuple[str, ...], LLMClient] = {}
        clients: dict[StageName, LLMClient] = {}
        for stage in STAGES:
            backend_settings = self.cfg.backend_for(stage)
            key = backend_settings.identity()
            if key not in by_identity:
                backend = None
                if self.backend_factory is not None:
                    backend = self.backend_factory(backend_settings, self.cfg.concurrency)
                if backend is None:
                    backend = self.own_backend(backend_settings, self.cfg.concurrency)
                self._wire_batches(backend, earlier)
                endpoint = settings.model_copy(update={"concurrency": backend.max_concurrency})
                admission = (
                    self.admission_factory(key, endpoint)
                    if self.admission_factory is not None
                    else LocalAdmission(endpoint)
                )
                by_identity[key] = LLMClient(
                    backend, cache=cache, admission=admission, usage=self.usage
                )
            clients[stage] = by_identity[key]
        return clients

    def _wire_batches(self, backend: Backend, earlier: RunReplies | None) -> None:
        """A batch transport counts results lost for good in the usage as it settles them (a
        kill right after still has them in the run's cost), and a Ray shard's reads the
        replies its run's batches delivered that no request used: returned and counted as
        they are to a local run resumed, not as free cache hits."""
        if hasattr(backend, "on_results_lost"):
            backend.on_results_lost = self._results_lost
            if earlier is not None:
                backend.delivered_before = earlier.delivered

    def _results_lost(self, model: str, lines: int, prompt: int, completion: int) -> None:
        self.usage.record_lost(model, lines, prompt, completion)
        if self._spend is not None:
            self._spend.flush()  # now: the ledger has the loss already (never a group later)

    def _show_batches(self) -> None:
        """Progress shows the batch transports' state (merged), when a stage uses one."""
        summaries = [c.backend.summary for c in self.endpoints if hasattr(c.backend, "summary")]
        if summaries:
            self.progress.batches = lambda: merge_batch_states([s() for s in summaries])

    def work_window(self) -> int:
        """How many requests the walk keeps open: set apart in the config, else twice what
        the busiest endpoint takes in flight (every slot refilled while replies are handled)."""
        if self.cfg.work_window is not None:
            return self.cfg.work_window
        return 2 * max(client.settings.concurrency for client in self.endpoints)

    async def ask(
        self, stage: StageName, request: ChatRequest, parse: Callable[[ChatResponse], T]
    ) -> T | GaveUp:
        """Send one unit's request; the parsed record, or GaveUp (counted, with examples)."""
        result: list[T] = []
        rejected = self.progress.rejected

        def check(reply: ChatResponse) -> str | None:
            try:
                result.append(parse(reply))
            except Rejected as exc:
                rejected[(stage, exc.kind)] += 1
                return str(exc)
            return None

        progress = self.progress.stages[stage]
        try:
            await self.clients[stage].chat(request, check)
        except RequestFailed as exc:
            progress.failed += 1
            examples = self.failure_examples.setdefault(stage, [])
            if len(examples) < 3:
                examples.append(str(exc)[:300])
            return GaveUp(exc.permanent)
        finally:
            progress.done += 1
        return result[-1]

    # ---- the run -------------------------------------------------------------------------
    async def run(self) -> RunResult:
        run_dir = RunDir(self.out_dir)
        with run_dir.opened():
            inputs = self.run_inputs = self.inputs()
            stale = run_dir.changed_stages(inputs, self.update)
            self.previous_manifest = run_dir.read_manifest()
            fold_shards(self.out_dir)  # what a Ray run left: this run goes on from it
            earlier = RunReplies(self.cache_fallback) if self.cache_fallback else None
            cache = ResponseCache(self.out_dir / STATE_FILE, earlier)
            self.clients = self._make_clients(cache, earlier)
            # Stages sharing an endpoint share one client: each is opened and closed once.
            self.endpoints = list({id(c): c for c in self.clients.values()}.values())
            self._show_batches()
            try:
                # Fail on a wrong URL or key before anything in the directory is touched.
                for client in self.endpoints:
                    await client.ensure_ready()
            except BaseException:
                for client in self.endpoints:
                    await client.aclose()
                cache.close()
                raise
            state = run_dir.state()
            part = uuid.uuid4().hex
            spend = self._spend = SpendLog(
                self.out_dir / STATE_FILE, self.invocation, part, self.usage
            )
            for stage in stale[:1]:  # dropping a stage drops everything below it too
                state.invalidate(stage)
            run_dir.record_inputs(inputs)
            atomic_write_text(self.out_dir / "taxonomy.yaml", self.taxonomy.to_yaml())
            models = {s: self.clients[s].backend.model for s in STAGES}
            self.walk = TreeWalk(
                self.plan, self.cfg, state, self.ask, models, self.progress, self.work_window()
            )
            started = time.time()
            status = "stopped"
            try:
                with long_run_gc():
                    await self._walk_passes(state, models)
                for client in self.endpoints:
                    client.admission.raise_if_never_answered(client.backend.endpoint_id)
                status = "finished"
            finally:
                # Published whatever happens to the closing (a stop may land in it).
                try:
                    for client in self.endpoints:
                        await client.aclose()
                finally:
                    try:
                        self._count_batch_faults()
                        spend.close()
                        manifest = self._finish(run_dir, state, status, started)
                    finally:
                        cache.close()
                        state.close()
            return RunResult(
                self.out_dir, manifest["counts"]["instructions"], self.target, manifest
            )

    async def _walk_passes(self, state: Any, models: dict[str, str]) -> None:
        """Walk the tree; while units were deferred (transient failures) and the last pass
        moved, walk again, as a re-run of the same command would (same records, no new
        decisions): one command finishes what a flaky endpoint interrupted."""
        await self.walk.run()
        for _ in range(MAX_PASSES - 1):
            if not self.walk.deferred:
                return
            writes = state.writes
            self.walk = TreeWalk(
                self.plan,
                self.cfg,
                state,
                self.ask,
                models,
                self.progress,
                self.work_window(),
                count_resumed=False,
            )
            await self.walk.run()
            if state.writes == writes:
                return  # nothing moved: the endpoint is what fails; the next run asks again

    def notes(self) -> dict[str, list[dict[str, Any]]]:
        """This invocation's notes on its endpoints, by manifest key (a Ray driver merges its
        shards')."""
        return {
            "schema_downgrades": [
                {"endpoint": c.backend.endpoint_id, **change}
                for c in self.endpoints
                for change in c.backend.structured_output_changes()
            ],
            "parameter_changes": [
                {"endpoint": c.backend.endpoint_id, **change}
                for c in self.endpoints
                for change in c.backend.parameter_changes()
            ],
            "batch_faults": self.batch_faults,
        }

    def _count_batch_faults(self) -> None:
        """What batch providers did that cost the run, for the manifest (results lost for good
        are in the usage already: `_wire_batches`)."""
        self.batch_faults = [
            {"endpoint": c.backend.endpoint_id, **fault}
            for c in self.endpoints
            for fault in getattr(c.backend, "faults", list)()
        ]

    def _finish(self, run_dir: RunDir, state: Any, status: str, started: float) -> dict[str, Any]:
        """Publish the outputs and the manifest. Every staged unit survives in the state, so a
        stopped run publishes what it has; a finished re-run with nothing new rewrites nothing."""
        previous = self.previous_manifest or {}
        unchanged = (
            state.writes == 0
            and previous.get("status") == "complete"
            and previous.get("target") == self.target
            and status == "finished"
            and previous.get("inputs") == self.run_inputs
        )
        if unchanged:
            published = {"counts": previous["counts"], "strategies": previous["strategies"]}
        else:
            published = run_dir.publish(self.plan, dict.fromkeys(self._paths(), state))
        made = published["counts"]["instructions"]
        planned = sum(d.quota for d in self.plan.disciplines)
        if status == "finished":
            # Fewer pairs than asked is never "complete": the same command makes the rest
            # (deferred units), or the manifest's failures say why it cannot.
            status = "complete" if made >= planned else "short"
        stats = [c.stats for c in self.endpoints]
        spent = spend_totals([self.out_dir / STATE_FILE], previous, self.invocation)
        failures = {s: p.failed for s, p in self.progress.stages.items()}
        manifest = {
            "glan_version": __version__,
            "status": status,
            "target": self.target,
            "missing": max(0, planned - made),
            "deferred_units": self.walk.deferred,
            # Of this invocation's deferred requests, those the endpoint fails at their size
            # while it serves the same kind smaller (glan.llm.outage), by endpoint and error.
            "deferred_too_large": [
                {"endpoint": c.backend.endpoint_id, "error": error, "requests": count}
                for c in self.endpoints
                for error, count in c.outages.deferred_too_large().items()
            ],
            "seed": self.cfg.seed,
            "shard": list(self.shard) if self.shard else None,
            "executor": self.cfg.executor.kind,
            **published,
            "planned_calls": self.plan.calls(self.cfg.subjects_mode == "two_turn"),
            "disciplines": len(self.plan.disciplines),
            "resumed_pairs": self.progress.resumed_pairs,
            "failures": failures,
            "failure_examples": self.failure_examples,
            "rejected_replies": {
                f"{s}.{k}": n for (s, k), n in sorted(self.progress.rejected.items())
            },
            "retries": sum(s.retries for s in stats),
            "rate_limited": sum(s.rate_limited for s in stats),
            "concurrency_cuts": sum(s.cuts for s in stats),
            # Every invocation's, this one's last (each run re-learns what its server lacks).
            # How endpoints changed what they send (a structured-output step down, a parameter
            # or schema keyword a model refused) and what batch providers did: every
            # invocation's, this one's last (each run re-learns what its server lacks).
            **{key: [*previous.get(key, []), *notes] for key, notes in self.notes().items()},
            **spent,
            "cost_usd": round(sum_cost(spent["usage"]), 6),
            "taxonomy_fingerprint": self.taxonomy.fingerprint(),
            "inputs": self.run_inputs,
            "config": self.cfg.model_dump(mode="json"),
            "started_at": started,
            "elapsed_s": round(time.time() - started, 3),
        }
        run_dir.write_manifest(manifest)
        return manifest

    def _paths(self) -> list[str]:
        return [d.discipline.path for d in self.plan.disciplines]
