"""One discipline's exam questions, made with the generation stages from held-out subjects.

Held out by construction: each discipline's subjects come from new listing calls (sample
indices from LISTING_BASE on, far beyond any the run's planner draws: at most
max_subject_samples + 3), and a listed subject too close to one the run holds is skipped
(glan.glantest.subject_match: the same name once normalised, most of the same words, or, with
glan[semantic], a near embedding). Syllabi and
questions are then made exactly as `glan generate` makes them (glan.stages).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from glan.aio import gather_all
from glan.config import STAGES, GenerateConfig, StageName
from glan.errors import UserError
from glan.glantest.subject_match import SubjectMatch, SubjectScreen
from glan.llm import ChatRequest, ChatResponse, RequestFailed
from glan.post.clean import read_records
from glan.records import QuestionPlan, Subject, Syllabus
from glan.stages import questions, subjects, syllabus
from glan.stages.errors import Rejected
from glan.taxonomy import DisciplineRef, Taxonomy

T = TypeVar("T")

LISTING_BASE = 1_000_000  # the run's listings use indices below max_subject_samples + 3
EXTRA_LISTINGS = 3
METHOD = (
    "subjects the run did not use: new listing calls (sample indices from "
    f"{LISTING_BASE:,}) per discipline, skipping every subject too close to one the run holds "
    "(the same normalised name, a similar word set, or with glan[semantic] a near embedding); "
    "syllabi and questions made by the generation stages; then every question checked against "
    "the run's training questions with glan clean's exact and MinHash near-duplicate dedup "
    "(and, with glan[semantic], by embedding)"
)

WHY = (
    "a question about a course the run trained on shares that course's concepts and phrasing "
    "with many training questions even when its exact concept combination was never drawn; a "
    "course the run never saw is held out as a whole, while the question style and discipline "
    "stay the run's (docs/glan-test.md)"
)


class ExamSettings(BaseModel):
    per_discipline: int = Field(50, ge=1, description="questions per discipline (paper: 50)")
    per_subject: int = Field(5, ge=1, description="questions per subject at most")


@dataclass
class _Course:
    syllabus: Syllabus
    plans: Any  # the subject's iterator of unused question plans
    text: str
    taken: int = 0


@dataclass
class _Counts:
    listed: int = 0
    skipped_run_subjects: int = 0
    too_close: list[SubjectMatch] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES[:3], 0))


def run_subjects(run_dir: Path) -> list[str]:
    """Every subject name the run holds (once each, by normalised name): those with a
    syllabus, those with pairs."""
    readers: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
        ("subjects.jsonl", lambda r: r.get("name")),
        ("instructions.jsonl", lambda r: (r.get("meta") or {}).get("subject")),
    )
    names: dict[str, str] = {}
    for file, name_of in readers:
        if (run_dir / file).is_file():
            for name in map(name_of, read_records(run_dir / file)):
                if name:
                    names.setdefault(subjects.normalise(name), name)
    return list(names.values())


class ExamBuilder:
    def __init__(
        self,
        cfg: GenerateConfig,
        clients: dict[StageName, Any],
        settings: ExamSettings,
        screen: SubjectScreen,
    ) -> None:
        self.cfg = cfg
        self.clients = clients
        self.settings = settings
        self.screen = screen
        self.counts = _Counts()
        self.models = {s: clients[s].backend.model for s in STAGES[:3]}

    async def ask(
        self, stage: StageName, request: ChatRequest, parse: Callable[[ChatResponse], T]
    ) -> T | None:
        result: list[T] = []

        def check(reply: ChatResponse) -> str | None:
            try:
                result.append(parse(reply))
            except Rejected as exc:
                return str(exc)
            return None

        try:
            await self.clients[stage].chat(request, check)
        except RequestFailed:
            self.counts.failed[stage] += 1
            return None
        return result[-1]


class DisciplineExam:
    """One discipline's exam questions, made on demand in a fixed order: `more(n)` continues
    where the last call stopped (so a replacement round asks new questions, never old ones)."""

    def __init__(self, builder: ExamBuilder, d: DisciplineRef) -> None:
        self.b = builder
        self.d = d
        cfg, s = builder.cfg, builder.settings
        self.subjects_needed = math.ceil(s.per_discipline / s.per_subject)
        self.max_listings = (
            2 * math.ceil(self.subjects_needed / cfg.plan.subjects_per_call) + EXTRA_LISTINGS
        )
        self.listings = 0
        self.seen: set[str] = set()
        self.pool: list[Subject] = []
        self.courses: list[_Course] = []

    async def more(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            combos = await self._combos(n - len(out))
            if not combos:
                break  # no held-out subject or combination is left in this discipline
            made = await gather_all(self._question(c, p) for c, p in combos)
            out += [m for m in made if m is not None]
        return out

    async def _combos(self, k: int) -> list[tuple[_Course, QuestionPlan]]:
        combos: list[tuple[_Course, QuestionPlan]] = []
        cap = self.b.settings.per_subject
        while True:
            for course in self.courses:
                while course.taken < cap and len(combos) < k:
                    plan = next(course.plans, None)
                    if plan is None:
                        course.taken = cap  # the syllabus has no unused combination left
                        break
                    course.taken += 1
                    combos.append((course, plan))
            if len(combos) >= k or not await self._new_courses(math.ceil((k - len(combos)) / cap)):
                return combos

    async def _new_courses(self, m: int) -> int:
        """Up to `m` more held-out subjects with a syllabus; how many were added."""
        added = 0
        while added < m:
            need = m - added
            while len(self.pool) < need and self.listings < self.max_listings:
                calls = math.ceil((need - len(self.pool)) / self.b.cfg.plan.subjects_per_call)
                batch = range(self.listings, min(self.max_listings, self.listings + calls))
                self.listings = batch.stop
                for listing in await gather_all(self._list(LISTING_BASE + i) for i in batch):
                    self._take(listing or [])
            if not self.pool:
                return added
            take, self.pool = self.pool[:need], self.pool[need:]
            made = await gather_all(self._syllabus(s) for s in take)
            for syl in made:
                if syl is not None:
                    rng = random.Random(f"{self.b.cfg.seed}|glan-test|{self.d.path}|{syl.subject}")
                    plans = questions.iter_plans(syl, self.b.cfg.questions.multi_ratio, rng)
                    self.courses.append(_Course(syl, plans, questions.syllabus_text(syl)))
                    added += 1
        return added

    def _take(self, listing: list[Subject]) -> None:
        new = []
        for subject in listing:
            key = subjects.normalise(subject.name)
            if key not in self.seen:
                self.seen.add(key)
                new.append(subject)
        for subject, close in zip(new, self.b.screen.match([s.name for s in new]), strict=True):
            if close is None:
                self.pool.append(subject)
            else:
                self.b.counts.skipped_run_subjects += 1
                self.b.counts.too_close.append(close)

    async def _list(self, i: int) -> list[Subject] | None:
        b, d = self.b, self.d
        b.counts.listed += 1
        if b.cfg.subjects_mode == "two_turn":
            free = await b.ask("subjects", subjects.build(d, i, b.cfg), lambda r: r.text)
            if free is None:
                return None
            request = subjects.build_format(d, i, b.cfg, free)
        else:
            request = subjects.build(d, i, b.cfg)
        return await b.ask("subjects", request, lambda r: subjects.parse(d, i, r))

    async def _syllabus(self, subject: Subject) -> Syllabus | None:
        cfg = self.b.cfg
        return await self.b.ask(
            "syllabus", syllabus.build(subject, cfg), lambda r: syllabus.parse(subject, r, cfg)
        )

    async def _question(self, course: _Course, plan: QuestionPlan) -> dict[str, Any] | None:
        syl, cfg = course.syllabus, self.b.cfg
        question = await self.b.ask(
            "questions", questions.build(syl, plan, cfg, course.text), questions.parse
        )
        if question is None:
            return None
        ident = hashlib.sha256(
            f"glan-test|{cfg.seed}|{self.d.path}|{syl.subject}|{plan.index}|{question}".encode()
        ).hexdigest()[:16]
        return {
            "id": ident,
            "question": question,
            "meta": {
                "field": syl.field,
                "subfield": syl.subfield,
                "discipline": syl.discipline,
                "group": self.d.group,
                "subject": syl.subject,
                "level": syl.level,
                "sessions": [syl.sessions[i].title for i in plan.session_ids],
                "concepts": list(plan.concepts),
                "strategy": plan.strategy,
                "question_model": self.b.models["questions"],
            },
        }


def select(taxonomy: Taxonomy, only: list[str] | None) -> list[DisciplineRef]:
    """The kept disciplines, or those whose name or path matches one of `only` (any case)."""
    found = taxonomy.disciplines()
    if not only:
        return found
    wanted = {o.casefold() for o in only}
    chosen = [d for d in found if d.name.casefold() in wanted or d.path.casefold() in wanted]
    missing = wanted - {d.name.casefold() for d in chosen} - {d.path.casefold() for d in chosen}
    if missing:
        raise UserError(f"--discipline: not in the taxonomy: {', '.join(sorted(missing))}")
    return chosen
