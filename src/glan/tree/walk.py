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

from glan.aio import bounded_map, gather_all, task_group
from glan.config import GenerateConfig
from glan.llm import ChatResponse
from glan.planner import DisciplinePlan, Plan, split_evenly
from glan.records import Subject, Syllabus
from glan.run.state import DisciplineState, RunState, Slot
from glan.stages import subjects, syllabus
from glan.tree.pairs import PairMaker
from glan.tree.progress import RunProgress
from glan.tree.units import Ask, DisciplineWork, GaveUp

__all__ = ["Ask", "GaveUp", "TreeWalk"]  # GaveUp and Ask: the walk's contract with its caller

EXTRA_LISTINGS = 3  # listing calls beyond the plan when a discipline runs out of subjects


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
        pair_slots = asyncio.Semaphore(max(2, window))
        self.pairs = PairMaker(cfg, state, ask, models, progress, pair_slots)
        self.discipline_window = max(2, window // 2)
        self.deferred = 0  # units deferred to the next run (transient failures)
        self.count_resumed = count_resumed

    async def run(self) -> None:
        await bounded_map(self._discipline, self.plan.disciplines, self.discipline_window)

    # ---- disciplines ---------------------------------------------------------------------
    async def _discipline(self, dp: DisciplinePlan) -> None:
        job = DisciplineWork(dp, self.state.load(dp.discipline.path))
        if self.count_resumed:
            self._count_resumed(dp, job.st)
        try:
            await self._fill_discipline(job)
        finally:
            self.deferred += job.deferred

    async def _fill_discipline(self, job: DisciplineWork) -> None:
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
                st.pairs_of(st.slots[slot].s).n_done for slot in range(n_slots) if slot in st.slots
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
        done = min(dp.quota, sum(p.n_done for p in st.pairs.values()))
        stages["questions"].planned -= done
        stages["answers"].planned -= done
        self.progress.resumed_pairs += done

    async def _list(self, job: DisciplineWork, samples: range) -> bool:
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

    def _base_subjects(self, job: DisciplineWork) -> list[Subject]:
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

    async def _hand_out_spares(self, job: DisciplineWork, failed: list[int]) -> list[int] | None:
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
        self, job: DisciplineWork, slots: list[int], targets: dict[int, int]
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
        job: DisciplineWork,
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

    async def _syllabus(self, job: DisciplineWork, s: int, subject: Subject) -> Syllabus | str:
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
        job: DisciplineWork,
        slot: int,
        s: int,
        syl: Syllabus,
        target: int,
        filled: dict[int, bool],
    ) -> None:
        try:
            filled[slot] = await self.pairs.make(job, s, syl, target)
        finally:
            self.subject_slots.release()


def _text(reply: ChatResponse) -> str:
    return reply.text
