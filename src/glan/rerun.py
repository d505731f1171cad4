"""What re-running a run directory would send: `glan generate --out RUN --dry-run` on a
directory that holds a run (glan.cli.dry_run prints it).

The real walk runs, as the re-run would (same plan, same --update rules), over a throw-away
copy of the run's decisions (its staged state without the pairs' text: glan.run.snapshot) in a
scratch directory. Its response cache reads every reply the run holds (cached, or downloaded
from a batch and not used yet) and writes only to the scratch store, and each endpoint is a
stand-in that never sends (glan.llm.dry). A request the run holds no reply for is one the
re-run would send: counted, with its prompt's tokens (about 4 characters a token) and a typical
reply's (glan.estimate), and answered with a stand-in reply (glan.stages.stand_in) so the walk
goes on below it and counts what would follow. A request already in one of the run's live
batches is paid for: counted apart. So the price is exact for all the run holds and has
decided (a finished run: nothing; after --update: what changed); below a request still to be
sent, the stand-in replies are as large as the run's own (glan.run.snapshot.reply_sizes; the
plan's sizes before it has any), their tokens the plan's averages.

The run directory is never written nor locked: a run in progress in it goes on undisturbed.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glan.config import STAGES, GenerateConfig
from glan.estimate import StageEstimate, priced, text_tokens
from glan.llm import ChatRequest
from glan.llm.backend import Backend, Completion
from glan.llm.dry import DryBackend, Sends
from glan.llm.settings import BATCH_KINDS
from glan.pipeline import Pipeline
from glan.run.rundir import STATE_FILE, RunDir
from glan.run.snapshot import RunStoresReplies, copy_decisions, live_batch_keys, reply_sizes
from glan.run.state import RunState
from glan.stages import stand_in
from glan.store import ResponseCache
from glan.taxonomy import Taxonomy
from glan.tree.walk import TreeWalk


@dataclass
class RerunPrice:
    """Per stage, what the re-run would send (calls, tokens, cost); the calls, pairs and
    disciplines the plan (a shard's: its own) holds; and per stage the requests already in
    live batches (paid: collected, not sent)."""

    rows: list[StageEstimate]
    planned: int
    pairs: int
    disciplines: int
    waiting: Counter[str]

    @property
    def calls(self) -> int:
        return sum(row.calls for row in self.rows)


class DryRerun(Pipeline):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A Pipeline's arguments (its own backend_factory aside): the run it prices."""
        super().__init__(*args, backend_factory=self._stand_in, **kwargs)
        self._shape = stand_in.Shape.planned(self.cfg)
        self._awaiting: set[str] = set()

    def _stand_in(self, settings: Any, concurrency: int) -> Backend:
        return DryBackend(
            settings.endpoint_id(),
            settings.model_name,
            self._answer,
            batch_pricing=settings.backend in BATCH_KINDS,
            awaiting=self._awaiting,
        )

    def _answer(self, request: ChatRequest) -> Completion:
        """A stand-in reply, with the tokens the real one would cost: the prompt's, as sent,
        and a typical reply's."""
        return Completion(
            stand_in.reply_text(request, self._shape),
            "stop",
            text_tokens(sum(len(m.content) for m in request.messages)),
            int(self._shape.tokens[request.tag]),
        )

    async def price(self) -> RerunPrice:
        # The real run's refusals (a directory it may not write, another seed, changed inputs
        # without --update), word for word.
        run_dir = RunDir(self.out_dir)
        run_dir.refuse_unwritable()
        stale = run_dir.changed_stages(self.inputs(), self.update)
        with tempfile.TemporaryDirectory(prefix="glan-dry-run-") as scratch:
            store = Path(scratch) / STATE_FILE
            copy_decisions(self.out_dir, store)
            # Below a call to send, the walk goes on over replies the size of the run's own.
            sizes = reply_sizes(store)
            self._shape = self._shape.like(self.cfg, sizes.subjects, sizes.sessions, sizes.concepts)
            self._awaiting.update(live_batch_keys(self.out_dir))
            cache = ResponseCache(store, RunStoresReplies(self.out_dir))
            state = RunState(store)
            try:
                self.clients = self._make_clients(cache)
                self.endpoints = list({id(c): c for c in self.clients.values()}.values())
                for stage in stale[:1]:  # dropping a stage drops everything below it too
                    state.invalidate(stage)
                models = {s: self.clients[s].backend.model for s in STAGES}
                self.walk = TreeWalk(
                    self.plan, self.cfg, state, self.ask, models, self.progress, self.work_window()
                )
                await self._walk_passes(state, models)
            finally:
                cache.close()
                state.close()
        return self._priced()

    def _priced(self) -> RerunPrice:
        rows, waiting = [], Counter[str]()
        for stage in STAGES:
            backend = self.clients[stage].backend
            assert isinstance(backend, DryBackend)
            sends = backend.sends.get(stage, Sends())
            rows.append(
                priced(self.cfg, stage, sends.calls, sends.prompt_tokens, sends.completion_tokens)
            )
            waiting[stage] = backend.waiting[stage]
        planned = sum(self.plan.calls(self.cfg.subjects_mode == "two_turn").values())
        pairs = sum(d.quota for d in self.plan.disciplines)
        return RerunPrice(rows, planned, pairs, len(self.plan.disciplines), +waiting)


def price_rerun(
    config: GenerateConfig,
    taxonomy: Taxonomy,
    out_dir: Path,
    target: int,
    update: bool = False,
    shard: tuple[int, int] | None = None,
) -> RerunPrice:
    """What `glan generate --out out_dir -n target [--update] [--shard I/K]` would send now."""
    from glan.aio import run

    return run(DryRerun(config, taxonomy, out_dir, target, update=update, shard=shard).price())
