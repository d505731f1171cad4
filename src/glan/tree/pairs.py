"""A subject's question/answer pairs: made until its target holds, a pair that failed for its
own sake replaced by the subject's next unused combination (glan.tree.walk explains the rules
that keep the records independent of timing)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from glan.aio import task_group
from glan.config import GenerateConfig
from glan.llm import ChatResponse
from glan.records import QuestionPlan, Syllabus
from glan.run.state import RunState, SubjectPairs
from glan.stages import answers, questions
from glan.tree.progress import RunProgress
from glan.tree.units import Ask, DisciplineWork, GaveUp

# Pairs of a subject that may fail for their own sake before it counts as run out.
MIN_FAILURE_BUDGET = 10
FAILURES_PER_TARGET = 2


class PairMaker:
    def __init__(
        self,
        cfg: GenerateConfig,
        state: RunState,
        ask: Ask,
        models: dict[str, str],
        progress: RunProgress,
        pair_slots: asyncio.Semaphore,
    ) -> None:
        """`pair_slots`: the walk's bound on pairs in flight, shared by all its subjects."""
        self.cfg = cfg
        self.state = state
        self.ask = ask
        self.models = models
        self.progress = progress
        self.pair_slots = pair_slots

    async def make(self, job: DisciplineWork, s: int, syl: Syllabus, target: int) -> bool:
        """Make pairs until `target` exist; a pair that failed for its own sake is replaced by
        the next unused combination, so the subject's pairs are the shortest prefix of its
        combinations that holds `target` successes, whatever the timing. A pair per free pair
        slot is started, never more than can still be needed. False when the syllabus ran out
        of combinations."""
        pairs = job.st.pairs_of(s)
        if pairs.closed:  # its plans are read back only while it is open
            pairs = job.st.pairs[s] = self.state.subject_pairs(job.path, s)
        try:
            return await self._open_pairs(job, s, syl, target, pairs)
        finally:
            pairs.close()

    async def _open_pairs(
        self, job: DisciplineWork, s: int, syl: Syllabus, target: int, pairs: SubjectPairs
    ) -> bool:
        seen = pairs.done | pairs.failed
        rng = random.Random(f"{self.cfg.seed}|{job.path}|{s}")
        fresh = (
            p
            for p in questions.iter_plans(syl, self.cfg.questions.multi_ratio, rng)
            if p.index not in seen
        )
        text = questions.syllabus_text(syl)
        open_pairs = 0  # started and not settled
        deferred = 0  # gave up for a transient reason: neither done nor replaced in this run
        settled = asyncio.Event()

        async def one(plan: QuestionPlan) -> None:
            nonlocal open_pairs, deferred
            try:
                outcome = await self._pair(job, s, syl, plan, text, pairs)
                if outcome == "deferred":
                    deferred += 1
                elif outcome == "failed":
                    self.progress.stages["questions"].planned += 1
                    self.progress.stages["answers"].planned += 1
            finally:
                open_pairs -= 1
                self.pair_slots.release()
                settled.set()

        # A subject whose units keep failing for their own sake (a model that never writes a
        # usable question for it) runs out like one without combinations: counted, so the
        # same failures end it at the same point in any run.
        budget = max(MIN_FAILURE_BUDGET, FAILURES_PER_TARGET * target)
        async with task_group() as group:
            while True:
                failed = len(pairs.failed)
                if failed >= budget:
                    break
                # Wait while the open pairs alone may reach the target or spend the budget:
                # what is taken next must not depend on which of them settles first.
                if (
                    len(pairs.done) + open_pairs + deferred >= target
                    or failed + open_pairs >= budget
                ):
                    if not open_pairs:
                        return True
                    settled.clear()
                    await settled.wait()
                    continue
                await self.pair_slots.acquire()
                plan = next(fresh, None)
                if plan is None:
                    self.pair_slots.release()
                    break
                open_pairs += 1
                group.create_task(one(plan))
        # Out of combinations (or of its failure budget); the open pairs have settled by now.
        return len(pairs.done) + deferred >= target

    async def _pair(
        self,
        job: DisciplineWork,
        s: int,
        syl: Syllabus,
        plan: QuestionPlan,
        text: str,
        pairs: SubjectPairs,
    ) -> str:
        """One question and its own answer (a failure here can never shift onto another pair):
        "done", "failed" (for its own sake: recorded, replaced) or "deferred"."""
        cfg = self.cfg
        question = await self.ask(
            "questions", questions.build(syl, plan, cfg, text), questions.parse
        )
        if isinstance(question, GaveUp):
            reply: tuple[str, str | None] | GaveUp = question
            self.progress.stages["answers"].planned -= 1
        else:
            reply = await self.ask("answers", answers.build(question, cfg), _answer)
        if isinstance(reply, GaveUp):
            if not reply.permanent:
                job.deferred += 1
                return "deferred"
            pairs.failed.add(plan.index)
            self.state.put_pair(job.path, s, plan.index, None)
            return "failed"
        assert isinstance(question, str)
        pairs.done.add(plan.index)
        self.state.put_pair(job.path, s, plan.index, self._record(syl, plan, question, *reply))
        self.progress.strategies[plan.strategy] += 1
        return "done"

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


def _answer(reply: ChatResponse) -> tuple[str, str | None]:
    return answers.parse(reply), reply.finish_reason
