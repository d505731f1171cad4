"""The tree walk: disciplines -> subjects -> syllabi -> question/answer pairs, streamed.

The walk knows nothing of where requests go: it builds each stage's request, hands it to an
`Ask` (which returns the parsed record, or GaveUp) and writes every unit to the run state as
soon as it is done. What the state already holds is never asked again.

The records are a function of the inputs and the replies, never of timing, throttling, the
executor or how often the run was stopped and resumed:
- A unit that gave up *for its own sake* (GaveUp.permanent: no usable reply after re-asks, a
  400) is recorded and replaced, inside its discipline, by rules that depend only on which
  units failed: a question or answer by the subject's next unused combination (the subject's
  pairs are always the shortest prefix of its combinations holding its target); a syllabus by
  the discipline's next spare subject, handed out in slot order once every syllabus of the
  round is settled (an extra listing call is made when none is left); a subject whose
  combinations run out gives its missing pairs to the discipline's other live subjects.
- A unit that gave up *for the endpoint's sake* (transient: 5xx or timeouts past the retries)
  is deferred, not replaced: the discipline makes no decision that depends on it (no spare, no
  extra listing, no hand-over of missing pairs) and the run ends short; the same command asks
  it again, and the result is the one a run without the failure gives.
- A subject is the listed subject at its index in the discipline's listings (in listing
  order); a discipline starts its subjects only once every planned listing is settled, so a
  listing that failed for a while can never shift the subjects after it.

Open work is bounded by one window (sized by the pipeline from the transports' concurrency,
or set apart for batch transports): open disciplines, open subjects and pairs in flight, with
tasks created only when they may run, so memory stays flat for any N.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from glan.aio import bounded_map, gather_all, task_group
from glan.config import GenerateConfig, StageName
from glan.llm import ChatRequest, ChatResponse
from glan.planner import DisciplinePlan, Plan, split_evenly
from glan.records import QuestionPlan, Subject, Syllabus
from glan.run.state import DisciplineState, RunState, Slot, SubjectPairs
from glan.stages import answers, questions, subjects, syllabus
from glan.tree.progress import RunProgress

T = TypeVar("T")
EXTRA_LISTINGS = 3  # listing calls beyond the plan when a discipline runs out of subjects
# Pairs of a subject that may fail for their own sake before it counts as run out.
MIN_FAILURE_BUDGET = 10
FAILURES_PER_TARGET = 2


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


@dataclass
class _Discipline:
    """One discipline's work in this run."""

    plan: DisciplinePlan
    st: DisciplineState
    listed: list[Subject] = field(default_factory=list)
    # A unit gave up for a transient reason: no decision that depends on the discipline's
    # outcomes as a whole is made in this run (the next run makes it, with the same result).
    deferred: int = 0

    @property
    def path(self) -> str:
        return self.plan.discipline.path


class TreeWalk:
    def __init__(
        self,
        plan: Plan,
        cfg: GenerateConfig,
        state: RunState,
        ask: Ask,
        models: dict[str, str],
        progress: RunProgress,
        window: int | None = None,
        count_resumed: bool = True,
    ) -> None:
        """`window`: how many requests the walk keeps open (default: twice the configured
        concurrency); open subjects and pairs in flight are bounded by it, open disciplines
        by half of it. `count_resumed`: take work found in the state off the progress plan
        (not again on a second pass of the same invocation)."""
        self.plan = plan
        self.cfg = cfg
        self.state = state
        self.ask = ask
        self.models = models
        self.progress = progress
        window = window or 2 * cfg.concurrency
        self.subject_slots = asyncio.Semaphore(max(4, window))
        self.pair_slots = asyncio.Semaphore(max(2, window))
        self.discipline_window = max(2, window // 2)
        self.deferred = 0  # units deferred to the next run (transient failures)
        self.count_resumed = count_resumed

    async def run(self) -> None:
        await bounded_map(self._discipline, self.plan.disciplines, self.discipline_window)

    # ---- disciplines ---------------------------------------------------------------------
    async def _discipline(self, dp: DisciplinePlan) -> None:
        job = _Discipline(dp, self.state.load(dp.discipline.path))
        if self.count_resumed:
            self._count_resumed(dp, job.st)
        try:
            await self._fill_discipline(job)
        finally:
            self.deferred += job.deferred

    async def _fill_discipline(self, job: _Discipline) -> None:
        dp, st = job.plan, job.st
        if not await self._list(job, range(dp.subject_samples)):
            return
        while not job.listed and len(st.listings) < dp.subject_samples + EXTRA_LISTINGS:
            # Every listing failed for its own sake: ask another.
            if not await self._list(job, range(len(st.listings), len(st.listings) + 1)):
                return
        base = self._base_subjects(job)
        n_slots = min(dp.subjects, len(base))
        if n_slots == 0:
            return
        quotas = split_evenly(dp.quota, [1.0] * n_slots)
        for slot in range(n_slots):
            if slot not in st.slots:
                spare = self._spare(st, base)
                if spare is None:
                    break
                st.slots[slot] = Slot(spare)
                self.state.put_slot(job.path, slot, st.slots[slot])
        live = [slot for slot in range(n_slots) if slot in st.slots]
        targets = {slot: quotas[slot] + st.slots[slot].extra for slot in live}
        while True:
            filled = await self._fill_slots(job, live, targets)
            if job.deferred:
                return  # what is missing may be the deferred units' own: decide next run
            live = [slot for slot in live if filled[slot]]
            missing = dp.quota - sum(
                len(st.pairs_of(st.slots[slot].s).done)
                for slot in range(n_slots)
                if slot in st.slots
            )
            if missing <= 0 or not live:
                return
            # Exhausted or failed slots left pairs undone: the live ones take them over. Each
            # round either fills every live slot or drops an exhausted one, so this ends.
            for slot, extra in zip(live, split_evenly(missing, [1.0] * len(live)), strict=True):
                st.slots[slot].extra += extra
                targets[slot] += extra
                self.state.put_slot(job.path, slot, st.slots[slot])

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

    async def _list(self, job: _Discipline, samples: range) -> bool:
        """Settle these listing calls (staged ones are not re-asked) and update the
        discipline's unique subjects; False when one was deferred."""
        st = job.st
        missing = [i for i in samples if i not in st.listings]
        found = await gather_all(self._listing(job.plan, i) for i in missing)
        for i, listing in zip(missing, found, strict=True):
            if isinstance(listing, GaveUp):
                if not listing.permanent:
                    job.deferred += 1
                    continue
                listing = None
            st.listings[i] = listing
            self.state.put_listing(job.path, i, listing)
        if job.deferred:
            return False
        job.listed = subjects.unique_subjects([st.listings[i] or [] for i in sorted(st.listings)])
        return True

    async def _listing(self, dp: DisciplinePlan, i: int) -> list[Subject] | GaveUp:
        d = dp.discipline
        if self.cfg.subjects_mode == "two_turn":
            free = await self.ask("subjects", subjects.build(d, i, self.cfg), _text)
            if isinstance(free, GaveUp):
                return free
            request = subjects.build_format(d, i, self.cfg, free)
        else:
            request = subjects.build(d, i, self.cfg)
        return await self.ask("subjects", request, lambda r: subjects.parse(d, i, r))

    def _base_subjects(self, job: _Discipline) -> list[Subject]:
        """The subjects the discipline's slots are planned from: those of its planned
        listings (and, when those listed nothing, of the extra ones asked until something was
        listed), never those of a listing asked later for spares, so a resumed run plans the
        same slots as an uninterrupted one."""
        st = job.st
        k = job.plan.subject_samples
        base = subjects.unique_subjects([st.listings.get(i) or [] for i in range(k)])
        while not base and k in st.listings:
            k += 1
            base = subjects.unique_subjects([st.listings.get(i) or [] for i in range(k)])
        return base

    def _spares(self, st: DisciplineState, listed: list[Subject]) -> list[int]:
        """Listed subjects no slot has used and whose syllabus has not failed, in order."""
        used = {slot.s for slot in st.slots.values()}
        return [
            s
            for s in range(len(listed))
            if s not in used and not (s in st.syllabi and st.syllabi[s] is None)
        ]

    def _spare(self, st: DisciplineState, listed: list[Subject]) -> int | None:
        spares = self._spares(st, listed)
        return spares[0] if spares else None

    async def _hand_out_spares(self, job: _Discipline, failed: list[int]) -> list[int] | None:
        """Give each failed slot, in slot order, the next spare subject; the slots given one.
        Extra listings are asked first, until there are spares enough or none may be asked,
        and the spares are then handed out in one step (one group commit): a stop or a
        deferred listing can never leave half a round handed out. None when a listing was
        deferred (nothing is handed out; the next run does it)."""
        dp, st = job.plan, job.st
        while len(self._spares(st, job.listed)) < len(failed):
            extra = len(st.listings)
            if extra >= dp.subject_samples + EXTRA_LISTINGS:
                break
            if not await self._list(job, range(extra, extra + 1)):
                return None
        given = []
        for slot, spare in zip(failed, self._spares(st, job.listed), strict=False):
            st.slots[slot].s = spare
            self.state.put_slot(job.path, slot, st.slots[slot])
            given.append(slot)
        return given

    # ---- subjects ------------------------------------------------------------------------
    async def _fill_slots(
        self, job: _Discipline, slots: list[int], targets: dict[int, int]
    ) -> dict[int, bool]:
        """Fill each slot to its target; per slot, False when it could not (no subject, or its
        combinations ran out). A slot whose syllabus fails for its own sake gets the next
        spare subject once every syllabus of its round is settled, in slot order, so which
        subject replaces which never depends on the order replies came in."""
        filled: dict[int, bool] = {}
        async with task_group() as pair_work:
            round_slots = slots
            while round_slots:
                outcomes: dict[int, str] = {}
                async with task_group() as syllabi:
                    for slot in round_slots:
                        await self.subject_slots.acquire()  # released when the subject closes
                        syllabi.create_task(
                            self._open_subject(
                                job, slot, targets[slot], pair_work, outcomes, filled
                            )
                        )
                if job.deferred:
                    break
                failed = sorted(s for s, o in outcomes.items() if o == "failed")
                given = await self._hand_out_spares(job, failed) if failed else []
                if given is None:
                    break  # a listing was deferred: the next run hands this round out
                for slot in failed:
                    if slot not in given:
                        filled[slot] = False
                round_slots = given
        return filled

    async def _open_subject(
        self,
        job: _Discipline,
        slot: int,
        target: int,
        pair_work: asyncio.TaskGroup,
        outcomes: dict[int, str],
        filled: dict[int, bool],
    ) -> None:
        """Settle the slot's syllabus (outcome: ok, failed or deferred); on success its pairs
        go on in `pair_work`, holding the subject slot until they are done."""
        handed_over = False
        try:
            s = job.st.slots[slot].s
            syl = await self._syllabus(job, s, job.listed[s])
            if isinstance(syl, Syllabus):
                outcomes[slot] = "ok"
                pair_work.create_task(self._subject_pairs(job, slot, s, syl, target, filled))
                handed_over = True
            else:
                outcomes[slot] = syl
        finally:
            if not handed_over:
                self.subject_slots.release()

    async def _syllabus(self, job: _Discipline, s: int, subject: Subject) -> Syllabus | str:
        """The subject's syllabus, or "failed" (for its own sake) or "deferred"."""
        st = job.st
        if s in st.syllabi:
            return st.syllabi[s] or "failed"
        syl = await self.ask(
            "syllabus",
            syllabus.build(subject, self.cfg),
            lambda r: syllabus.parse(subject, r, self.cfg),
        )
        if isinstance(syl, GaveUp):
            if not syl.permanent:
                job.deferred += 1
                return "deferred"
            st.syllabi[s] = None
            self.state.put_syllabus(job.path, s, subject, None)
            return "failed"
        st.syllabi[s] = syl
        self.state.put_syllabus(job.path, s, subject, syl)
        return syl

    async def _subject_pairs(
        self,
        job: _Discipline,
        slot: int,
        s: int,
        syl: Syllabus,
        target: int,
        filled: dict[int, bool],
    ) -> None:
        try:
            filled[slot] = await self._pairs(job, s, syl, target)
        finally:
            self.subject_slots.release()

    async def _pairs(self, job: _Discipline, s: int, syl: Syllabus, target: int) -> bool:
        """Make pairs until `target` exist; a pair that failed for its own sake is replaced by
        the next unused combination, so the subject's pairs are the shortest prefix of its
        combinations that holds `target` successes, whatever the timing. A pair per free pair
        slot is started, never more than can still be needed. False when the syllabus ran out
        of combinations."""
        pairs = job.st.pairs_of(s)
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
        job: _Discipline,
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


def _text(reply: ChatResponse) -> str:
    return reply.text


def _answer(reply: ChatResponse) -> tuple[str, str | None]:
    return answers.parse(reply), reply.finish_reason
