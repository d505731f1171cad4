"""`glan test run`: each model answers every exam question, then the judge scores each pair of
answers in both orders (or, `--absolute`, each answer alone); the records and the report are
written beside each other.

Everything goes through LLMClient with one response cache (TEST_DIR/glan.sqlite), so a killed
run re-asks nothing it had finished: a re-run replays the finished calls from the cache and
sends only the rest. The records are a function of the exam, the endpoints and the replies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import orjson
from pydantic import BaseModel, Field

from glan import __version__
from glan.aio import bounded_map, gather_all
from glan.errors import UserError
from glan.glantest import absolute as absolute_judge
from glan.glantest import answer, judge
from glan.glantest.endpoints import Clients, describe
from glan.glantest.exam import read_exam, read_references
from glan.glantest.report import build_report, write_report
from glan.glantest.report_absolute import build_absolute_report, write_absolute_report
from glan.llm import AdmissionSettings, BackendSettings, LLMClient, Price, UsageLedger
from glan.run.files import atomic_file, run_lock
from glan.store import ResponseCache


class GradeSettings(BaseModel):
    concurrency: int = Field(8, ge=1, description="exam items in flight")
    answer_max_tokens: int | None = Field(None, ge=16, description="None: 1024 (384 on tiny)")
    judge_max_tokens: int = Field(512, ge=64)
    max_retries: int = Field(6, ge=0)
    use_references: bool = True
    bootstrap: int = Field(2000, ge=100)
    seed: int = 0
    absolute: bool = Field(False, description="score each answer alone (any number of models)")

    def answer_tokens(self, settings: BackendSettings) -> int:
        if self.answer_max_tokens is not None:
            return self.answer_max_tokens
        return answer.max_tokens_for(settings)


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_label(label: str) -> None:
    if not _LABEL.fullmatch(label):  # it names the results directory
        raise UserError(f"model label {label!r}: use letters, digits, '.', '_' or '-'")


def check_labels(models: dict[str, BackendSettings]) -> tuple[str, str]:
    if len(models) != 2:
        raise UserError(
            f"give exactly two models to compare (--model A=SPEC --model B=SPEC), got {len(models)}"
            " (--absolute scores any number alone)"
        )
    a, b = models
    for label in (a, b):
        if label == "tie":
            raise UserError("'tie' is a verdict, not a model label: choose another label")
        _check_label(label)
    return a, b


def check_absolute_labels(models: dict[str, BackendSettings]) -> list[str]:
    """The labels in the order given: the first is the baseline the others are compared with."""
    if not models:
        raise UserError("give at least one model to score (--model LABEL=SPEC)")
    for label in models:
        _check_label(label)
    return list(models)


NAME_BYTES = 100  # a results folder's name: well under the 255 bytes file systems allow


def results_name(labels: list[str], absolute: bool) -> str:
    """The default results folder: A-vs-B, or absolute- and the labels joined by '-'; when a
    label holds a '-' (["a-b", "c"] and ["a", "b-c"] would join alike) or the name grows long,
    the number of models and a hash of the labels."""
    if not absolute:
        return f"{labels[0]}-vs-{labels[1]}"
    name = "absolute-" + "-".join(labels)
    if any("-" in label for label in labels) or len(name.encode()) > NAME_BYTES:
        digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:12]
        return f"absolute-{len(labels)}-models-{digest}"
    return name


def check_results_dir(out_dir: Path, labels: list[str], absolute: bool) -> None:
    """A folder that holds another grading's report (other models, or the other mode) is
    refused: writing there would replace it."""
    try:
        report = orjson.loads((out_dir / "report.json").read_bytes())
    except (OSError, ValueError):
        return  # nothing there yet (or nothing readable: a killed run's, rewritten whole)
    mode = report.get("mode", "pairwise")
    had = report.get("labels") if mode == "absolute" else report.get("pair")
    if (mode, had) != ("absolute" if absolute else "pairwise", labels):
        raise UserError(
            f"{out_dir} holds the results of {', '.join(had or [])} ({mode}): "
            f"give another --out for {', '.join(labels)}"
        )


async def judge_answers(
    client: LLMClient,
    item: dict[str, Any],
    answers: dict[str, answer.Answer],
    reference: str | None,
    max_tokens: int,
    absolute: bool,
) -> dict[str, Any]:
    """The record's verdicts on the item's answers. Absolute: each answer scored alone, one
    after the other (identical answers are one request, asked once); a model whose endpoint
    was failing waits for a re-run. Pairwise: both answers in one call, in both orders (the
    first label shown first in "AB"), one order after the other: when both answers are the
    same text the two orders are one request, asked once and then read from the cache."""
    if absolute:
        grades = [
            await absolute_judge.judge_alone(client, item, label, a.text, reference, max_tokens)
            for label, a in answers.items()
            if not a.retry_later
        ]
        return {"grades": [g.model_dump() for g in grades]}
    if any(a.retry_later for a in answers.values()):
        return {"judgments": []}
    pair = cast(tuple[str, str], tuple(answers))
    texts = {label: a.text for label, a in answers.items()}
    verdicts = [
        await judge.judge_order(client, item, pair, order, texts, reference, max_tokens)
        for order in ("AB", "BA")
    ]
    return {"judgments": [v.model_dump() for v in verdicts]}


async def grade(
    test_dir: Path,
    models: dict[str, BackendSettings],
    judge_settings: BackendSettings,
    out_dir: Path,
    settings: GradeSettings | None = None,
    prices: dict[str, Price] | None = None,
    on_item: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Grade `models` on the exam in `test_dir` with the judge; returns the report. Pairwise:
    the two models judged side by side in both orders. Absolute (`settings.absolute`): each
    of one or more models scored alone, and compared with the first (the baseline)."""
    settings = settings or GradeSettings()
    check = check_absolute_labels if settings.absolute else check_labels
    labels = list(check(models))
    items = read_exam(test_dir)
    references = read_references(test_dir) if settings.use_references else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    usage = UsageLedger(prices)
    with run_lock(out_dir):
        check_results_dir(out_dir, labels, settings.absolute)
        cache = ResponseCache(test_dir / "glan.sqlite")
        admission = AdmissionSettings(
            concurrency=2 * settings.concurrency, max_retries=settings.max_retries
        )
        clients = Clients(cache, usage, admission)
        model_clients = {label: clients.get(s) for label, s in models.items()}
        judge_client = clients.get(judge_settings)
        try:
            await clients.ready()

            async def one(item: dict[str, Any]) -> dict[str, Any]:
                got = await gather_all(
                    answer.answer(
                        model_clients[label],
                        item["question"],
                        settings.answer_tokens(models[label]),
                    )
                    for label in labels
                )
                answers = dict(zip(labels, got, strict=True))
                record: dict[str, Any] = {
                    "id": item["id"],
                    "meta": item.get("meta") or {},
                    "answers": {label: asdict(a) for label, a in answers.items()},
                    **await judge_answers(
                        judge_client,
                        item,
                        answers,
                        references.get(item["id"]),
                        settings.judge_max_tokens,
                        settings.absolute,
                    ),
                }
                if on_item is not None:
                    on_item()
                return record

            records = await bounded_map(one, items, settings.concurrency)
        finally:
            await clients.aclose()
            cache.close()
        with atomic_file(out_dir / "judgments.jsonl") as fh:
            for record in records:
                fh.write(orjson.dumps(record) + b"\n")
        info = {
            "glan_version": __version__,
            "exam": str(test_dir),
            "models": {label: describe(s) for label, s in models.items()},
            "judge": describe(judge_settings),
            "references": bool(references),
            "cut_at_token_limit": answer.cut_answers(records, labels),
            "settings": settings.model_dump(),
            "usage": usage.as_dict(),
            "cost_usd": round(usage.total().cost_usd, 6),
        }
        if settings.absolute:
            report = build_absolute_report(records, labels, info, settings.bootstrap, settings.seed)
            write_absolute_report(report, out_dir)
        else:
            report = build_report(
                records, (labels[0], labels[1]), info, settings.bootstrap, settings.seed
            )
            write_report(report, out_dir)
    return report
