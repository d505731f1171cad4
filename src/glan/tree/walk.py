"""The tree walk: disciplines -> subjects -> syllabi -> question/answer pairs, streamed.

The walk knows nothing of where requests go: it builds each stage's request, hands it to an
`Ask` (which returns the parsed record, or None when the unit gave up) and writes every unit to
the run state as soon as it is done. What the state already holds is never asked again.

Failures are replaced in the stream, inside the discipline that lost them, so a discipline's
output depends on nothing outside it (shards of disciplines merge into the whole run's output):
- a question or answer that gave up: the same worker takes the subject's next unused
  combination at once;
- a syllabus that gave up: its slot takes the discipline's next spare subject (listings return
  more subjects than planned; an extra listing call is made when none is left);
- a subject whose combinations run out, or a slot left with no subject: its missing pairs go to
  the discipline's other live subjects as extra quota.

Work runs under run-wide bounds sized to the concurrency (open disciplines, open subjects,
pairs in flight), so stages overlap, the endpoint stays busy and memory stays flat for any N.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from glan.aio import bounded_map, gather_all
from glan.config import GenerateConfig, StageName
from glan.llm import ChatRequest, ChatResponse
from glan.planner import DisciplinePlan, Plan, split_evenly
from glan.records import QuestionPlan, Subject, Syllabus
from glan.run.state import DisciplineState, RunState, Slot
from glan.stages import answers, questions, subjects, syllabus
from glan.tree.progress import RunProgress

T = TypeVar("T")
EXTRA_LISTINGS = 3  # listing calls beyond the plan when a discipline runs out of subjects
REBALANCE_ROUNDS = 3  # rounds of moving a discipline's missing pairs to its live subjects


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A unit's request gave up. `permanent`: the request itself is the problem, so the unit
    is recorded as failed and never asked again; otherwise the endpoint was failing, and only
    this run moves on without it (a later run asks it again)."""

    permanent: bool


class Ask(Protocol):
    def __call__(
        self, stage: StageName, request: ChatRequest, parse: Callable[[ChatResponse], T]
    ) -> Awaitable[T | GaveUp]: ...


class TreeWalk:
    def __init__(
        self,
        plan: Plan,
        cfg: GenerateConfig,
        state: RunState,
        ask: Ask,
        models: dict[str, str],
        progress: RunProgress,
    ) -> None:
        self.plan = plan
        self.cfg = cfg
        self.state = state
        self.ask = ask
        self.models = models
        self.progress = progress
        conc = cfg.concurrency
        # Enough open work to fill `conc` slots at every stage, and no more (flat memory).
        self.subject_slots = asyncio.Semaphore(max(4, 2 * conc))
        self.pair_slots = asyncio.Semaphore(max(2, 2 * conc))
        self.window = max(2, conc)

    async def run(self) -> None:
        await bounded_map(self._discipline, self.plan.disciplines, self.window)

    # ---- disciplines ---------------------------------------------------------------------
    async def _discipline(self, dp: DisciplinePlan) -> None:
        d = dp.discipline.path
        st = self.state.load(d)
        self._count_resumed(dp, st)
        listed = await self._subjects(dp, st, range(dp.subject_samples))
        while not listed and len(st.listings) < dp.subject_samples + EXTRA_LISTINGS:
            extra = len(st.listings)  # every listing failed: ask another
            listed = await self._subjects(dp, st, range(extra, extra + 1))
        n_slots = min(dp.subjects, len(listed))
        if n_slots == 0:
            return
        quotas = split_evenly(dp.quota, [1.0] * n_slots)
        for slot in range(n_slots):
            if slot not in st.slots:
                spare = self._spare(st, listed)
                if spare is None:
                    break
                st.slots[slot] = Slot(spare)
                self.state.put_slot(d, slot, st.slots[slot])
        live = [slot for slot in range(n_slots) if slot in st.slots]
        targets = {slot: quotas[slot] + st.slots[slot].extra for slot in live}
        for _ in range(REBALANCE_ROUNDS + 1):
            outcomes = await gather_all(
                self._slot(dp, st, slot, targets[slot], listed) for slot in live
            )
            live = [slot for slot, ok in zip(live, outcomes, strict=True) if ok]
            missing = dp.quota - sum(
                len(st.pairs_of(st.slots[slot].s).done)
                for slot in range(n_slots)
                if slot in st.slots
            )
            if missing <= 0 or not live:
                return
            # Exhausted or failed slots left pairs undone: the live ones take them over.
            for slot, extra in zip(live, split_evenly(missing, [1.0] * len(live)), strict=True):
                st.slots[slot].extra += extra
                targets[slot] += extra
                self.state.put_slot(d, slot, st.slots[slot])

    def _count_resumed(self, dp: DisciplinePlan, st: DisciplineState) -> None:
        """Work found in the state is not planned again (progress shows this run's work)."""
        stages = self.progress.stages
        listed = sum(1 for i in st.listings if i < dp.subject_samples)
        stages["subjects"].planned -= listed * (2 if self.cfg.subjects_mode == "two_turn" else 1)
        stages["syllabus"].planned -= min(dp.subjects, len(st.syllabi))
        done = min(dp.quota, sum(len(p.done) for p in st.pairs.values()))
        stages["questions"].planned -= done
        stages["answers"].planned -= done
        self.progress.resumed_pairs += done

    async def _subjects(
        self, dp: DisciplinePlan, st: DisciplineState, samples: range
    ) -> list[Subject]:
        """The discipline's unique subjects over its listing calls (staged ones not re-asked)."""
        missing = [i for i in samples if i not in st.listings]
        found = await gather_all(self._list(dp, i) for i in missing)
        for i, listing in zip(missing, found, strict=True):
            if isinstance(listing, GaveUp):
                st.listings[i] = None
                if listing.permanent:
                    self.state.put_listing(dp.discipline.path, i, None)
            else:
                st.listings[i] = listing
                self.state.put_listing(dp.discipline.path, i, listing)
        return subjects.unique_subjects([st.listings[i] or [] for i in sorted(st.listings)])

    async def _list(self, dp: DisciplinePlan, i: int) -> list[Subject] | GaveUp:
        d = dp.discipline
        if self.cfg.subjects_mode == "two_turn":
            free = await self.ask("subjects", subjects.build(d, i, self.cfg), _text)
            if isinstance(free, GaveUp):
                return free
            request = subjects.build_format(d, i, self.cfg, free)
        else:
            request = subjects.build(d, i, self.cfg)
        return await self.ask("subjects", request, lambda r: subjects.parse(d, i, r))

    def _spare(self, st: DisciplineState, listed: list[Subject]) -> int | None:
        """The first listed subject no slot has used and whose syllabus has not failed."""
        used = {slot.s for slot in st.slots.values()}
        for s in range(len(listed)):
            if s not in used and not (s in st.syllabi and st.syllabi[s] is None):
                return s
        return None

    # ---- subjects ------------------------------------------------------------------------
    async def _slot(
        self, dp: DisciplinePlan, st: DisciplineState, slot: int, target: int, listed: list[Subject]
    ) -> bool:
        """Fill one slot to `target` pairs; False when it cannot (no subject, or exhausted)."""
        d = dp.discipline.path
        async with self.subject_slots:
            while True:
                s = st.slots[slot].s
                syl = await self._syllabus(d, st, s, listed[s])
                if syl is not None:
                    return await self._pairs(d, st, s, syl, target)
                async with st.lock:  # one slot at a time takes spares and asks for more
                    if not await self._take_spare(dp, st, slot, listed):
                        return False

    async def _take_spare(
        self, dp: DisciplinePlan, st: DisciplineState, slot: int, listed: list[Subject]
    ) -> bool:
        d = dp.discipline.path
        while True:
            spare = self._spare(st, listed)
            if spare is None:
                extra = len(st.listings)
                if extra >= dp.subject_samples + EXTRA_LISTINGS:
                    return False
                listed[:] = await self._subjects(dp, st, range(extra, extra + 1))
                continue  # look again: that listing may have added new subjects
            st.slots[slot].s = spare
            self.state.put_slot(d, slot, st.slots[slot])
            return True

    async def _syllabus(
        self, d: str, st: DisciplineState, s: int, subject: Subject
    ) -> Syllabus | None:
        if s in st.syllabi:
            return st.syllabi[s]
        syl = await self.ask(
            "syllabus",
            syllabus.build(subject, self.cfg),
            lambda r: syllabus.parse(subject, r, self.cfg),
        )
        if isinstance(syl, GaveUp):
            st.syllabi[s] = None
            if syl.permanent:
                self.state.put_syllabus(d, s, subject, None)
            return None
        st.syllabi[s] = syl
        self.state.put_syllabus(d, s, subject, syl)
        return syl

    async def _pairs(self, d: str, st: DisciplineState, s: int, syl: Syllabus, target: int) -> bool:
        """Run pair workers until `target` pairs exist; a failed pair's worker takes the next
        unused combination at once. False when the syllabus ran out of combinations."""
        pairs = st.pairs_of(s)
        need = target - len(pairs.done)
        if need <= 0:
            return True
        seen = pairs.done | pairs.failed
        rng = random.Random(f"{self.cfg.seed}|{d}|{s}")
        fresh = (
            p
            for p in questions.iter_plans(syl, self.cfg.questions.multi_ratio, rng)
            if p.index not in seen
        )
        text = questions.syllabus_text(syl)
        exhausted = False

        async def worker() -> None:
            nonlocal exhausted
            for plan in fresh:
                if await self._pair(d, s, syl, plan, text, pairs.done, pairs.failed):
                    return
                self.progress.stages["questions"].planned += 1
                self.progress.stages["answers"].planned += 1
            exhausted = True

        await gather_all(worker() for _ in range(need))
        return not exhausted

    async def _pair(
        self,
        d: str,
        s: int,
        syl: Syllabus,
        plan: QuestionPlan,
        text: str,
        done: set[int],
        failed: set[int],
    ) -> bool:
        """One question and its own answer: a failure here can never shift onto another pair."""
        cfg = self.cfg
        async with self.pair_slots:
            question = await self.ask(
                "questions", questions.build(syl, plan, cfg, text), questions.parse
            )
            if isinstance(question, GaveUp):
                reply: tuple[str, str | None] | GaveUp = question
                self.progress.stages["answers"].planned -= 1
            else:
                reply = await self.ask("answers", answers.build(question, cfg), _answer)
        if isinstance(reply, GaveUp):
            failed.add(plan.index)
            if reply.permanent:
                self.state.put_pair(d, s, plan.index, None)
            return False
        assert isinstance(question, str)
        done.add(plan.index)
        self.state.put_pair(d, s, plan.index, self._record(syl, plan, question, *reply))
        self.progress.strategies[plan.strategy] += 1
        return True

    def _record(
        self, syl: Syllabus, plan: QuestionPlan, question: str, answer: str, finish: str | None
    ) -> dict[str, Any]:
        """One line of instructions.jsonl (glan.records.Instruction), built as a plain dict:
        this runs once per pair, and a model round-trip would cost more than the rest."""
        ident = hashlib.sha256(
            f"{self.cfg.seed}|{syl.discipline}|{syl.subject}|{plan.index}|{question}".encode()
        ).hexdigest()[:16]
        return {
            "id": ident,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "meta": {
                "field": syl.field,
                "subfield": syl.subfield,
                "discipline": syl.discipline,
                "subject": syl.subject,
                "level": syl.level,
                "sessions": [syl.sessions[i].title for i in plan.session_ids],
                "concepts": list(plan.concepts),
                "strategy": plan.strategy,
                "question_model": self.models["questions"],
                "answer_model": self.models["answers"],
                "answer_finish_reason": finish,
            },
        }


def _text(reply: ChatResponse) -> str:
    return reply.text


def _answer(reply: ChatResponse) -> tuple[str, str | None]:
    return answers.parse(reply), reply.finish_reason
