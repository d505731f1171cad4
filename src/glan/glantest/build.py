"""`glan test build`: make the exam directory (exam.jsonl, manifest.json, references.jsonl).

The exam is held out from the run by construction (glan.glantest.discipline: subjects the run
never used) and checked after the fact (glan.glantest.overlap): every question is compared with
the run's training questions, and with the exam's own, by `glan clean`'s exact and MinHash
dedup and, with glan[semantic], by embedding (a paraphrase). A repeat is dropped, recorded in
the manifest and replaced by a new question of the same discipline (up to ROUNDS rounds). The
kept exam is then checked again from scratch, and that overlap, recorded in the manifest, is 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from glan import __version__
from glan.aio import bounded_map, gather_all
from glan.config import STAGES, GenerateConfig, StageName
from glan.errors import UserError
from glan.glantest import answer
from glan.glantest.discipline import (
    LISTING_BASE,
    METHOD,
    WHY,
    DisciplineExam,
    ExamBuilder,
    ExamSettings,
    run_subjects,
    select,
)
from glan.glantest.endpoints import Clients, describe
from glan.glantest.exam import EXAM_FILE, MANIFEST_FILE, NO_GROUP, REFERENCES_FILE
from glan.glantest.holdout import MODEL, HoldoutSettings, encoder_for
from glan.glantest.overlap import Overlap, OverlapChecker, overlaps, training_questions
from glan.glantest.semantic_overlap import SemanticOverlap
from glan.glantest.subject_match import SubjectScreen
from glan.llm import AdmissionSettings, BackendSettings, UsageLedger
from glan.llm.usage import sum_cost
from glan.run.files import (
    TABLES,  # noqa: F401 - (kept for symmetry with run directories)
    atomic_file,
    atomic_write_json,
    atomic_write_text,
    run_lock,
)
from glan.store import ResponseCache
from glan.taxonomy import Taxonomy

ROUNDS = 3


async def build_exam(
    cfg: GenerateConfig,
    taxonomy: Taxonomy,
    out_dir: Path,
    settings: ExamSettings | None = None,
    run_dir: Path | None = None,
    only: list[str] | None = None,
    reference: BackendSettings | None = None,
    on_discipline: Callable[[], None] | None = None,
    holdout: HoldoutSettings | None = None,
) -> dict[str, Any]:
    """Make (or resume: every call is cached in out_dir/glan.sqlite) the exam; its manifest."""
    settings = settings or ExamSettings()
    holdout = holdout or HoldoutSettings()
    cfg = cfg.adapted()
    chosen = select(taxonomy, only)
    if not chosen:
        raise UserError("the taxonomy keeps no discipline: nothing to examine")
    training_file = run_dir / "instructions.jsonl" if run_dir else None
    if training_file is not None and not training_file.is_file():
        raise UserError(f"{run_dir} holds no instructions.jsonl: is it a glan run directory?")
    encode = encoder_for(holdout) if run_dir else None  # nothing to compare with: not loaded
    screen = SubjectScreen(run_subjects(run_dir) if run_dir else [], holdout, encode)
    semantic = None
    if encode is not None and training_file is not None:
        semantic = SemanticOverlap(encode, holdout.question_threshold)
        semantic.add_training(training_questions(training_file))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    usage = UsageLedger(cfg.prices)
    with run_lock(out_dir):
        cache = ResponseCache(out_dir / "glan.sqlite")
        admission = AdmissionSettings(
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            breaker_failures=cfg.breaker_failures,
            breaker_window_s=cfg.breaker_window_s,
        )
        clients = Clients(cache, usage, admission)
        by_stage: dict[StageName, Any] = {s: clients.get(cfg.backend_for(s)) for s in STAGES[:3]}
        ref_client = clients.get(reference) if reference is not None else None
        try:
            await clients.ready()
            builder = ExamBuilder(cfg, by_stage, settings, screen)
            exams = [DisciplineExam(builder, d) for d in chosen]
            training = training_questions(training_file) if training_file else ()
            checker = OverlapChecker(training, semantic=semantic)
            kept: list[list[dict[str, Any]]] = [[] for _ in exams]
            dropped = []
            for round_ in range(ROUNDS):
                wants = [settings.per_discipline - len(k) for k in kept]
                todo = [i for i, w in enumerate(wants) if w > 0]
                if not todo:
                    break

                async def more(
                    i: int, wants: list[int] = wants, first: bool = round_ == 0
                ) -> list[dict[str, Any]]:
                    made = await exams[i].more(wants[i])
                    if first and on_discipline is not None:
                        on_discipline()
                    return made

                made = await bounded_map(more, todo, max(2, cfg.concurrency))
                if not any(made):
                    break
                for i, items in zip(todo, made, strict=True):  # tree order: deterministic
                    for item, found in zip(items, checker.check_items(items), strict=True):
                        if found is None:
                            kept[i].append(item)
                        else:
                            dropped.append(found)
            items = [item for k in kept for item in k]
            references = (
                await gather_all(
                    answer.answer(
                        ref_client,
                        item["question"],
                        answer.max_tokens_for(reference),
                        answer.REFERENCE_TAG,
                    )
                    for item in items
                )
                if ref_client is not None
                else None
            )
        finally:
            await clients.aclose()
            cache.close()
        try:
            training = training_questions(training_file) if training_file else ()
            remaining = overlaps(training, items, semantic)
        finally:
            if semantic is not None:
                semantic.close()
        if any(o.source == "training" for o in remaining):  # the check itself is broken
            raise RuntimeError("an exam question repeating a training question survived the check")
        with atomic_file(out_dir / EXAM_FILE) as fh:
            for item in items:
                fh.write(orjson.dumps(item) + b"\n")
        if references is not None:
            with atomic_file(out_dir / REFERENCES_FILE) as fh:
                for item, ref in zip(items, references, strict=True):
                    row = {"id": item["id"], "model": ref_client.backend.model, "answer": ref.text}
                    if ref.finish_reason:
                        row["finish_reason"] = ref.finish_reason
                    if ref.error:
                        row["error"] = ref.error
                    fh.write(orjson.dumps(row) + b"\n")
        atomic_write_text(out_dir / "taxonomy.yaml", taxonomy.to_yaml())
        manifest = _manifest(
            cfg, taxonomy, settings, run_dir, exams, kept, dropped, remaining, checker, builder
        )
        manifest["overlap"]["semantic"] = (
            {"model": MODEL, "threshold": holdout.question_threshold} if semantic else None
        )
        manifest["held_out"]["subject_thresholds"] = {
            "tokens": holdout.token_threshold,
            **({"embedding": holdout.subject_threshold} if encode is not None else {}),
        }
        manifest["references"] = (
            None
            if references is None
            else {
                "endpoint": describe(reference),
                "answered": sum(1 for r in references if not r.error),
                "failed": sum(1 for r in references if r.error),
                "cut_at_token_limit": sum(1 for r in references if r.finish_reason == answer.CUT),
                "file": REFERENCES_FILE,
            }
        )
        usage_dict = usage.as_dict()
        manifest.update(
            usage=usage_dict,
            cost_usd=round(sum_cost(usage_dict), 6),
            elapsed_s=round(time.time() - started, 3),
        )
        atomic_write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def _manifest(
    cfg: GenerateConfig,
    taxonomy: Taxonomy,
    settings: ExamSettings,
    run_dir: Path | None,
    exams: list[DisciplineExam],
    kept: list[list[dict[str, Any]]],
    dropped: list[Overlap],
    remaining: list[Overlap],
    checker: OverlapChecker,
    builder: ExamBuilder,
) -> dict[str, Any]:
    disciplines = {}
    groups: dict[str, int] = {}
    for exam, items in zip(exams, kept, strict=True):
        group = exam.d.group or NO_GROUP
        disciplines[exam.d.path] = {
            "group": exam.d.group,
            "items": len(items),
            "short": settings.per_discipline - len(items),
            "subjects": len({i["meta"]["subject"] for i in items}),
            "listing_calls": exam.listings,
        }
        groups[group] = groups.get(group, 0) + len(items)
    counts = builder.counts
    return {
        "glan_version": __version__,
        "kind": "glan-test exam",
        "source": {
            "run_dir": str(run_dir) if run_dir else None,
            "taxonomy_fingerprint": taxonomy.fingerprint(),
        },
        "held_out": {
            "method": METHOD,
            "why": WHY,
            "listing_sample_base": LISTING_BASE,
            "run_subject_names": len(builder.screen),
            "subject_checks": builder.screen.checks,
            "listed_subjects_skipped_as_run_subjects": counts.skipped_run_subjects,
            "subjects_too_close": [m.as_dict() for m in counts.too_close],
        },
        "per_discipline": settings.per_discipline,
        "per_subject": settings.per_subject,
        "counts": {
            "items": sum(len(k) for k in kept),
            "disciplines": len(exams),
            "short": sum(d["short"] for d in disciplines.values()),
        },
        "groups": groups,
        "disciplines": disciplines,
        "overlap": {
            "checked_against": str(run_dir / "instructions.jsonl") if run_dir else None,
            "training_questions": checker.training,
            "method": "glan clean dedup: exact after normalisation, MinHash-LSH near duplicates"
            + ("; embeddings (cosine to a training question)" if checker.semantic else ""),
            "checks": ["exact", "near", *(["semantic"] if checker.semantic else [])],
            "near_threshold": checker.settings.near_threshold,
            "found_with_training": sum(1 for o in dropped if o.source == "training"),
            "found_semantic_with_training": sum(1 for o in dropped if o.kind == "semantic"),
            "found_within_exam": sum(1 for o in dropped if o.source == "exam"),
            "dropped": [o.as_dict() for o in dropped],
            "with_training_after_filtering": sum(1 for o in remaining if o.source == "training"),
        },
        "failures": counts.failed,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
    }
