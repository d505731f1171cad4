"""`glan test check`: an exam against the final training files; exit 0 when nothing is found,
1 on a leak, 2 on a usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from glan.cli.app import Opt, out
from glan.cli.glantest import (
    SemanticOpt,
    SubjectSemanticOpt,
    SubjectTokenOpt,
    holdout_settings,
    test_app,
)


@test_app.command("check")
def test_check(
    exam: Annotated[
        Path, typer.Argument(metavar="EXAM", help="the exam directory (glan test build)")
    ],
    training: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRAINING_FILE...",
            help="final training data: .jsonl, .parquet or .arrow files (messages, alpaca, "
            "sharegpt, prompt), glan export folders (hf included), saved datasets or run dirs",
        ),
    ],
    semantic: SemanticOpt = None,
    semantic_threshold: Annotated[
        float,
        Opt(help="cosine at which a question is listed as a possible paraphrase"),
    ] = 0.8,
    subject_token_threshold: SubjectTokenOpt = 0.75,
    subject_semantic_threshold: SubjectSemanticOpt = 0.9,
    strict: Annotated[
        bool,
        Opt(
            "--strict",
            help="possible paraphrases and subjects possibly close fail the check too (exit 1)",
        ),
    ] = False,
    json_out: Annotated[
        Path | None, Opt("--json", help="also write the findings to this JSON file")
    ] = None,
) -> None:
    """Re-check an exam against the final training files. They may be cleaned, merged or
    mixed with other data. It lists exam questions that repeat a training question (exact or near: leaks; with
    glan\\[semantic], close by embedding: possible paraphrases, listed) and exam subjects named
    like a training subject (leaks) or sharing most of its words or, with glan\\[semantic], its
    embedding (possibly close, listed). Exit code 0 when no leak is found (what is listed fails
    only with --strict), 1 when one is, 2 on a usage error."""
    from glan.glantest.check import check_exam
    from glan.run.files import atomic_write_json

    holdout = holdout_settings(
        semantic,
        paraphrase_threshold=semantic_threshold,
        token_threshold=subject_token_threshold,
        subject_threshold=subject_semantic_threshold,
    )
    result = check_exam(exam, training, holdout, strict)
    _print_check(result)
    if json_out is not None:
        atomic_write_json(json_out, result.as_dict())
    if not result.clean:
        raise typer.Exit(1)


def _short(question: str) -> str:
    return question if len(question) <= 70 else question[:67] + "..."


def _question_table(title: str, found: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: {len(found)}")
    for column in ("exam id", "check", "score", "training record", "question"):
        table.add_column(column)
    for x in found:
        score = "" if x.get("score") is None else f"{x['score']:.3f}"
        table.add_row(x["exam_id"], x["kind"], score, x["of"], _short(x["question"]))
    out.print(table)


def _print_check(result: Any) -> None:

    sem = result.semantic
    checks = "exact + MinHash" + (
        f" + embeddings ({sem['model']}, cosine >= {sem['threshold']}: possible paraphrases)"
        if sem
        else " only (no embedding check: glan[semantic] not installed, or --no-semantic)"
    )
    out.print(
        f"{result.exam_items:,} exam questions against {result.training_questions:,} training "
        f"questions in {len(result.training_files)} file(s)"
        + (
            f" ({result.records_without_question:,} record(s) without a user turn skipped)"
            if result.records_without_question
            else ""
        )
        + f"; question checks: {checks}",
        highlight=False,
        soft_wrap=True,
    )
    if result.leaks:
        _question_table("exam questions found in the training data", result.leaks)
    if result.possible_paraphrases:
        _question_table("possible paraphrases of a training question", result.possible_paraphrases)
    if result.subject_checks:
        for title, found in (
            ("exam subjects too close to a training subject", result.subjects_too_close),
            ("exam subjects possibly close to a training subject", result.subjects_possibly_close),
        ):
            if found:
                _subject_table(title, found)
        subjects = (
            f"{result.training_subjects:,} training subjects ({', '.join(result.subject_checks)})"
        )
    else:
        subjects = "not checked: the training files name no subjects (meta.subject)"
    out.print(f"subject check: {subjects}", highlight=False, soft_wrap=True)
    out.print(_verdict(result), highlight=False, soft_wrap=True)


def _subject_table(title: str, found: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: {len(found)}")
    for column in ("exam subject", "training subject", "check", "score"):
        table.add_column(column)
    for m in found:
        table.add_row(m.subject, m.close_to, m.check, f"{m.score:.3f}")
    out.print(table)


def _verdict(result: Any) -> str:
    review = ", ".join(
        f"{n} {what}"
        for n, what in (
            (len(result.possible_paraphrases), "possible paraphrase(s)"),
            (len(result.subjects_possibly_close), "subject(s) possibly close"),
        )
        if n
    )
    if result.leaks or result.subjects_too_close or (result.strict and review):
        verdict = (
            f"LEAKS: {len(result.leaks)} question(s), {len(result.subjects_too_close)} subject(s)"
        )
        if review:
            verdict += f"; {'with --strict' if result.strict else 'to review'}: {review}"
    elif review:
        verdict = (
            f"no leaks; to review: {review} (a close question may be a rewording or another "
            "question on the same template, a close subject another course: read them; "
            "--strict fails on them)"
        )
    else:
        verdict = "clean: no exam question or subject found in the training data"
    if result.repeats_within_exam:
        verdict += f"; {result.repeats_within_exam} exam question(s) repeat another exam question"
    return verdict
