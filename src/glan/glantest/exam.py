"""The exam's files in TEST_DIR: exam.jsonl (one question a line, with its place in the
taxonomy and its GLAN-Test group), references.jsonl (optional reference answers, kept apart so
that a model under test never sees them) and manifest.json (how the exam was made)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from glan.errors import UserError

EXAM_FILE = "exam.jsonl"
REFERENCES_FILE = "references.jsonl"
MANIFEST_FILE = "manifest.json"
NO_GROUP = "(none)"


class ExamMeta(BaseModel):
    field: str
    subfield: str
    discipline: str
    group: str | None
    subject: str
    level: str
    sessions: list[str]
    concepts: list[str]
    strategy: str
    question_model: str


class ExamItem(BaseModel):
    """One line of exam.jsonl."""

    id: str
    question: str
    meta: ExamMeta


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                raise UserError(f"{path}:{number}: not a JSON line") from None
    return out


def read_exam(test_dir: Path) -> list[dict[str, Any]]:
    path = test_dir / EXAM_FILE
    if not path.is_file():
        raise UserError(f"{test_dir} holds no {EXAM_FILE}: make one with glan test build")
    items = _lines(path)
    if not items:
        raise UserError(f"{path} holds no questions")
    return items


def read_references(test_dir: Path) -> dict[str, str]:
    path = test_dir / REFERENCES_FILE
    if not path.is_file():
        return {}
    return {r["id"]: r["answer"] for r in _lines(path) if r.get("answer")}


def group_of(record: dict[str, Any]) -> str:
    return (record.get("meta") or {}).get("group") or NO_GROUP
