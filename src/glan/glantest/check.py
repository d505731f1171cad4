"""`glan test check`: an existing exam against the final training files, which may differ
from the run the exam was held out from (cleaned, merged, mixed with other data).

The same checks as the build, with the training files as the reference: each exam question
against every training question (exact and MinHash near duplicates are leaks; with
glan[semantic], an embedding cosine from `paraphrase_threshold` on is a possible paraphrase,
listed for a person to read and a leak only when `strict`: different questions on one template
score as high as rewordings), and each exam subject against the subjects the training
records name (glan's messages, parquet and hf exports and run files keep them in
`meta.subject`; Alpaca and ShareGPT exports do not, and the subject check then has nothing to
compare with and says so): the same normalised name is a leak; most of the same words or a
near embedding is possibly close, listed, and a leak only when `strict`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glan.errors import UserError
from glan.glantest.exam import EXAM_FILE, read_exam
from glan.glantest.holdout import MODEL, HoldoutSettings, encoder_for
from glan.glantest.overlap import OverlapChecker
from glan.glantest.semantic_overlap import SemanticOverlap
from glan.glantest.subject_match import SubjectMatch, SubjectScreen
from glan.glantest.training_text import TrainingRecord, files_of, read_training


@dataclass
class CheckResult:
    exam_items: int
    training_files: list[str]
    training_questions: int
    records_without_question: int  # no user turn: not a training question, not checked
    training_subjects: int
    question_checks: list[str]
    subject_checks: list[str]
    semantic: dict[str, Any] | None  # the model and threshold, when the embeddings ran
    strict: bool = False  # what is only possibly close counts as a leak too
    leaks: list[dict[str, Any]] = field(default_factory=list)  # exact or near training repeats
    # Close by embedding only: as often another question on the same template as a rewording.
    possible_paraphrases: list[dict[str, Any]] = field(default_factory=list)
    repeats_within_exam: int = 0
    subjects_too_close: list[SubjectMatch] = field(default_factory=list)  # the same name
    # Most of the same words, or a near embedding: as often another course ("European" and
    # "Modern European History").
    subjects_possibly_close: list[SubjectMatch] = field(default_factory=list)

    @property
    def to_review(self) -> bool:
        return bool(self.possible_paraphrases or self.subjects_possibly_close)

    @property
    def clean(self) -> bool:
        if self.strict and self.to_review:
            return False
        return not self.leaks and not self.subjects_too_close

    def as_dict(self) -> dict[str, Any]:
        subjects = ("subjects_too_close", "subjects_possibly_close")
        return {
            **{k: v for k, v in self.__dict__.items() if k not in subjects},
            **{k: [m.as_dict() for m in getattr(self, k)] for k in subjects},
            "clean": self.clean,
        }


def exam_items(exam: Path) -> list[dict[str, Any]]:
    """The items of an exam directory, or of its exam.jsonl named directly."""
    if exam.is_file() and exam.name == EXAM_FILE:
        exam = exam.parent
    if not exam.is_dir():
        raise UserError(f"exam not found: {exam} (an exam directory made by glan test build)")
    return read_exam(exam)


def training_records(files: list[Path]) -> Iterator[TrainingRecord]:
    for f in files:
        yield from read_training(f)


def check_exam(
    exam: Path, training: list[Path], holdout: HoldoutSettings | None = None, strict: bool = False
) -> CheckResult:
    holdout = holdout or HoldoutSettings()
    items = exam_items(exam)
    files = [f for path in training for f in files_of(path)]  # user errors before any work
    subjects: dict[str, None] = {}

    without_question = 0

    def questions() -> Iterator[tuple[str, str]]:
        nonlocal without_question
        for record in training_records(files):
            if record.subject:
                subjects.setdefault(record.subject)
            if record.text.strip():
                yield record.id, record.text
            else:
                without_question += 1

    checker = OverlapChecker(questions())  # reads every file: a bad record stops it early
    if not checker.training:
        names = ", ".join(f.name for f in files)
        raise UserError(f"no training question (a record's user turns) in {names}")
    encode = encoder_for(holdout)
    if encode is not None:
        checker.semantic = SemanticOverlap(encode, holdout.paraphrase_threshold)
    try:
        if checker.semantic is not None:
            checker.semantic.add_training(
                (r.id, r.text) for r in training_records(files) if r.text.strip()
            )
        found = checker.check_items(items)
    finally:
        if checker.semantic is not None:
            checker.semantic.close()
    screen = SubjectScreen(subjects, holdout, encode)
    exam_subjects = list(dict.fromkeys((i.get("meta") or {}).get("subject") or "" for i in items))
    exam_subjects = [s for s in exam_subjects if s]
    by_id = {i["id"]: i["question"] for i in items}
    result = CheckResult(
        exam_items=len(items),
        training_files=[str(f) for f in files],
        training_questions=checker.training,
        records_without_question=without_question,
        training_subjects=len(screen),
        question_checks=["exact", "near", *(["semantic"] if encode else [])],
        subject_checks=screen.checks if len(screen) else [],
        semantic={"model": MODEL, "threshold": holdout.paraphrase_threshold} if encode else None,
        strict=strict,
    )
    for overlap in found:
        if overlap is None:
            continue
        found_item = {**overlap.as_dict(), "question": by_id[overlap.exam_id]}
        if overlap.source == "exam":
            result.repeats_within_exam += 1
        elif overlap.kind == "semantic":
            result.possible_paraphrases.append(found_item)
        else:
            result.leaks.append(found_item)
    for m in screen.match(exam_subjects):
        if m is not None:
            close = (
                result.subjects_too_close if m.check == "name" else result.subjects_possibly_close
            )
            close.append(m)
    return result
