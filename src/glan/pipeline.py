"""The GLAN pipeline: taxonomy -> subjects -> syllabi -> questions -> answers, streamed.

Work flows down the tree under run-wide bounds sized to the concurrency: open disciplines, open
subjects (a syllabus in flight or questions being asked) and pairs in flight. Stages overlap
(one subject's questions are asked while another's syllabus is in flight), the endpoint stays
busy however the target is spread, and memory stays flat whatever N is. Every call
goes through the response cache, so re-running a command after a crash replays answered
requests for free and sends only what is missing; the run is a function of (config, taxonomy,
seed) and the replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from glan import __version__
from glan.aio import bounded_map
from glan.config import STAGES, GenerateConfig, StageName
from glan.errors import UserError
from glan.llm import AdmissionSettings, LLMClient, RequestFailed, UsageLedger, create_backend
from glan.llm.admission import raise_if_never_answered
from glan.planner import DisciplinePlan, Plan, make_plan, split_evenly
from glan.records import ChatTurn, Instruction, InstructionMeta, QuestionPlan, Subject, Syllabus
from glan.runstate import (
    RecordStore,
    atomic_write_json,
    atomic_write_text,
    prepare_out_dir,
    run_lock,
)
from glan.stages import answers, questions, subjects, syllabus
from glan.store import ResponseCache
from glan.taxonomy import Taxonomy

TOPUP_ROUNDS = 3
T = TypeVar("T")


@dataclass
class StageProgress:
    planned: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class RunProgress:
    """Live counters the CLI draws; updated by the pipeline as replies arrive."""

    stages: dict[str, StageProgress] = field(
        default_factory=lambda: {s: StageProgress() for s in STAGES}
    )
    started: float = field(default_factory=time.monotonic)
    usage: UsageLedger | None = None


@dataclass
class RunResult:
    out_dir: Path
    instructions: int
    target: int
    manifest: dict[str, Any]


def _ordinal(*parts: int) -> str:
    return ".".join(f"{p:06d}" for p in parts)


class Pipeline:
    def __init__(
        self,
        config: GenerateConfig,
        taxonomy: Taxonomy,
        out_dir: Path,
        target: int,
        progress: RunProgress | None = None,
    ) -> None:
        if target <= 0:
            raise UserError(f"-n must be a positive number of pairs, got {target}")
        self.cfg = config.adapted_to_local()
        self.taxonomy = taxonomy
        disciplines = taxonomy.disciplines()
        if not disciplines:
            raise UserError("the taxonomy keeps no discipline: nothing to generate")
        self.plan: Plan = make_plan(target, disciplines, self.cfg)
        self.out_dir = out_dir
        self.target = target
        self.progress = progress or RunProgress()
        self.usage = UsageLedger(self.cfg.prices)
        self.progress.usage = self.usage
        calls = self.plan.calls(self.cfg.subjects_mode == "two_turn")
        for stage, n in calls.items():
            self.progress.stages[stage].planned = n

    # ---- clients -------------------------------------------------------------------------
    def _make_clients(self, cache: ResponseCache) -> dict[StageName, LLMClient]:
        """One client per distinct endpoint, shared by the stages that use it (one limiter)."""
        admission = AdmissionSettings(
            concurrency=self.cfg.concurrency,
            max_retries=self.cfg.max_retries,
            breaker_failures=self.cfg.breaker_failures,
            breaker_window_s=self.cfg.breaker_window_s,
        )
        by_identity: dict[tuple, LLMClient] = {}
        clients: dict[StageName, LLMClient] = {}
        for stage in STAGES:
            settings = self.cfg.backend_for(stage)
            key = settings.identity()
            if key not in by_identity:
                backend = create_backend(settings, concurrency=self.cfg.concurrency)
                by_identity[key] = LLMClient(
                    backend,
                    cache=cache,
                    admission=admission.model_copy(
                        update={"concurrency": min(admission.concurrency, backend.max_concurrency)}
                    ),
                    usage=self.usage,
                )
            clients[stage] = by_identity[key]
        return clients

    # ---- the tree ------------------------------------------------------------------------
    async def _discipline(self, dp: DisciplinePlan) -> None:
        d = dp.discipline

        async def one_sample(i: int) -> list[Subject]:
            listing = subjects.list_subjects(self.clients["subjects"], d, i, self.cfg)
            return await self._attempt("subjects", listing) or []

        samples = await bounded_map(one_sample, list(range(dp.subject_samples)), dp.subject_samples)
        chosen = subjects.unique_subjects(samples)[: dp.subjects]
        self.progress.stages["syllabus"].planned -= dp.subjects - len(chosen)
        if not chosen:
            return
        for s_idx, subject in enumerate(chosen):
            self.records.add("subjects", _ordinal(dp.index, s_idx), subject.model_dump())
        quotas = split_evenly(dp.quota, [1.0] * len(chosen))
        for s_idx, q in enumerate(quotas):
            self.subject_quotas[(dp.index, s_idx)] = q
        work = [
            (dp.index, s_idx, subj, q)
            for s_idx, (subj, q) in enumerate(zip(chosen, quotas, strict=True))
        ]
        await bounded_map(self._open_subject, work, len(work))

    async def _open_subject(self, item: tuple[int, int, Subject, int]) -> None:
        async with self.subject_slots:
            await self._subject(item)

    async def _subject(self, item: tuple[int, int, Subject, int]) -> None:
        d_idx, s_idx, subject, quota = item
        designed = syllabus.design_syllabus(self.clients["syllabus"], subject, self.cfg, 0)
        syl = await self._attempt("syllabus", designed)
        if syl is None:
            return
        if not syl.sessions:
            self.failures["syllabus"] += 1
            return
        self.records.add("syllabi", _ordinal(d_idx, s_idx), syl.model_dump())
        plans = questions.plan_questions(
            syl, quota, self.cfg.questions.multi_ratio, self._rng(d_idx, s_idx)
        )
        await self._pairs(d_idx, s_idx, syl, plans)

    async def _attempt(self, stage: str, call: Awaitable[T]) -> T | None:
        """Await one stage's call; a request that gave up is counted and yields None."""
        progress = self.progress.stages[stage]
        try:
            return await call
        except RequestFailed as exc:
            progress.failed += 1
            self._failed(stage, exc)
            return None
        finally:
            progress.done += 1

    def _failed(self, stage: str, exc: Exception) -> None:
        self.failures[stage] += 1
        examples = self.failure_examples.setdefault(stage, [])
        if len(examples) < 3:
            examples.append(str(exc)[:300])

    def _rng(self, d_idx: int, s_idx: int) -> random.Random:
        return random.Random(f"{self.cfg.seed}|{d_idx}|{s_idx}")

    async def _pairs(
        self, d_idx: int, s_idx: int, syl: Syllabus, plans: list[QuestionPlan]
    ) -> None:
        async def pair(plan: QuestionPlan) -> None:
            async with self.pair_slots:
                await self._pair(d_idx, s_idx, syl, plan)

        await bounded_map(pair, plans, self.cfg.concurrency)

    async def _pair(self, d_idx: int, s_idx: int, syl: Syllabus, plan: QuestionPlan) -> None:
        """One question and its own answer: a failure here can never shift onto another pair."""
        asked = questions.ask_question(self.clients["questions"], syl, plan, self.cfg)
        question = await self._attempt("questions", asked)
        if question is None:
            return
        reply = await self._attempt(
            "answers", answers.answer(self.clients["answers"], question, self.cfg)
        )
        if reply is None:
            return
        ident = hashlib.sha256(
            f"{self.cfg.seed}|{syl.discipline}|{syl.subject}|{plan.index}|{question}".encode()
        ).hexdigest()[:16]
        record = Instruction(
            id=ident,
            messages=[
                ChatTurn(role="user", content=question),
                ChatTurn(role="assistant", content=reply.text),
            ],
            meta=InstructionMeta(
                field=syl.field,
                subfield=syl.subfield,
                discipline=syl.discipline,
                subject=syl.subject,
                level=syl.level,
                sessions=[syl.sessions[i].title for i in plan.session_ids],
                concepts=list(plan.concepts),
                strategy=plan.strategy,
                question_model=self.clients["questions"].backend.model,
                answer_model=self.clients["answers"].backend.model,
                answer_finish_reason=reply.finish_reason,
            ),
        )
        self.records.add("instructions", _ordinal(d_idx, s_idx, plan.index), record.model_dump())
        self.strategies[plan.strategy] += 1

    async def _top_up(self) -> None:
        """Failed items leave a deficit: give it to subjects that have syllabi, as extra
        questions beyond their planned ones (new combinations, never repeated ones)."""
        quotas = self.subject_quotas
        for _ in range(TOPUP_ROUNDS):
            deficit = self.target - self.records.count("instructions")
            if deficit <= 0:
                return
            syllabi = [
                (*(int(part) for part in ordinal.split(".")), Syllabus.model_validate_json(body))
                for ordinal, body in self.records.iter_items("syllabi")
            ]
            if not syllabi:
                return
            extras = split_evenly(deficit, [1.0] * len(syllabi))
            for (d_idx, s_idx, syl), extra in zip(syllabi, extras, strict=True):
                if extra == 0:
                    continue
                base = quotas.get((d_idx, s_idx), 0) + self.topped_up.get((d_idx, s_idx), 0)
                plans = questions.plan_questions(
                    syl, base + extra, self.cfg.questions.multi_ratio, self._rng(d_idx, s_idx)
                )[base:]
                self.topped_up[(d_idx, s_idx)] = base + extra - quotas.get((d_idx, s_idx), 0)
                self.progress.stages["questions"].planned += len(plans)
                self.progress.stages["answers"].planned += len(plans)
                await self._pairs(d_idx, s_idx, syl, plans)

    # ---- the run -------------------------------------------------------------------------
    async def run(self) -> RunResult:
        prepare_out_dir(self.out_dir)
        with run_lock(self.out_dir):
            self._check_compatible()
            cache = ResponseCache(self.out_dir / "glan.sqlite")
            self.clients = self._make_clients(cache)
            # Stages sharing an endpoint share one client: each is opened and closed once.
            clients = self.endpoints = list({id(c): c for c in self.clients.values()}.values())
            try:
                # Fail on a wrong URL or key before anything in the directory is touched.
                for client in clients:
                    await client.ensure_ready()
            except BaseException:
                for client in clients:
                    await client.aclose()
                cache.close()
                raise
            self.records = RecordStore(self.out_dir / "glan.sqlite")
            self.records.reset()
            self.failures = {s: 0 for s in STAGES}
            self.strategies: Counter[str] = Counter()
            self.failure_examples: dict[str, list[str]] = {}
            self.topped_up: dict[tuple[int, int], int] = {}
            self.subject_quotas: dict[tuple[int, int], int] = {}
            conc = self.cfg.concurrency
            # Enough open work to fill `conc` slots at every stage, and no more (flat memory).
            self.subject_slots = asyncio.Semaphore(max(4, 2 * conc))
            self.pair_slots = asyncio.Semaphore(max(2, 2 * conc))
            started = time.time()
            status = "stopped"
            atomic_write_text(self.out_dir / "taxonomy.yaml", self.taxonomy.to_yaml())
            try:
                await bounded_map(self._discipline, self.plan.disciplines, max(2, conc))
                await self._top_up()
                for client in clients:
                    raise_if_never_answered(client.breaker, client.backend.endpoint_id)
                status = "complete"
            finally:
                for client in clients:
                    await client.aclose()
                manifest = self._finish(status, started)
                cache.close()
                self.records.close()
            return RunResult(
                self.out_dir, manifest["counts"]["instructions"], self.target, manifest
            )

    def _finish(self, status: str, started: float) -> dict[str, Any]:
        """Publish the outputs and the manifest. A stopped run publishes what it staged only if
        that is not less than what is already published: a resume that fails early (endpoint
        still down) must not replace a good partial output with a smaller one."""
        previous = (self.previous_manifest or {}).get("counts") or {}
        staged = self.records.count("instructions")
        if status == "complete" or staged >= previous.get("instructions", 0):
            counts = {
                table: self.records.export_jsonl(table, self.out_dir / f"{table}.jsonl")
                for table in ("subjects", "syllabi", "instructions")
            }
        else:
            counts = previous
        stats = [c.stats for c in self.endpoints]
        manifest = {
            "glan_version": __version__,
            "status": status,
            "target": self.target,
            "seed": self.cfg.seed,
            "counts": counts,
            "strategies": {"single": self.strategies["single"], "multi": self.strategies["multi"]},
            "planned_calls": self.plan.calls(self.cfg.subjects_mode == "two_turn"),
            "disciplines": len(self.plan.disciplines),
            "failures": self.failures,
            "failure_examples": self.failure_examples,
            "retries": sum(s.retries for s in stats),
            "rate_limited": sum(s.rate_limited for s in stats),
            "concurrency_cuts": sum(s.cuts for s in stats),
            "usage": self.usage.as_dict(),
            "cost_usd": round(self.usage.total().cost_usd, 6),
            "taxonomy_fingerprint": self.taxonomy.fingerprint(),
            "config": self.cfg.model_dump(mode="json"),
            "started_at": started,
            "elapsed_s": round(time.time() - started, 3),
        }
        atomic_write_json(self.out_dir / "manifest.json", manifest)
        return manifest

    def _check_compatible(self) -> None:
        """A directory holds one run's data; a different seed there would mix two runs."""
        path = self.out_dir / "manifest.json"
        self.previous_manifest: dict[str, Any] | None = None
        if not path.exists():
            return
        try:
            previous = self.previous_manifest = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            return
        if previous.get("seed") != self.cfg.seed:
            raise UserError(
                f"{self.out_dir} holds a run made with seed {previous.get('seed')}, not "
                f"{self.cfg.seed}: pass --seed {previous.get('seed')} to resume it, "
                "or choose a new --out to start fresh"
            )
