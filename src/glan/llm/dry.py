"""A backend that never sends: it stands in for an endpoint in a dry run (glan.rerun).

It has the endpoint's identity, so a request's cache key is the one the real backend gives it
(what the run's cache holds is found as a real run finds it), and answers every request the
cache could not with a reply made by the caller, counting it per stage: as a call the real
run would send, or, for a request already in one of the run's live batches (`awaiting`: paid;
the real run collects it), apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from glan.llm.backend import Backend, Completion
from glan.llm.types import ChatRequest

#: Requests the walk keeps open against a stand-in: it answers at once, so this only bounds
#: the walk's memory (what it asks never depends on it: glan.tree.walk).
DRY_CONCURRENCY = 64


@dataclass
class Sends:
    """The calls a stage would send, and their tokens."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class DryBackend(Backend):
    max_concurrency = DRY_CONCURRENCY

    def __init__(
        self,
        endpoint_id: str,
        model: str,
        answer: Callable[[ChatRequest], Completion],
        batch_pricing: bool = False,
        awaiting: Collection[str] = frozenset(),
    ) -> None:
        """`answer`: the reply to give a request, with the tokens it would cost;
        `awaiting`: the cache keys (batch custom_ids) of the run's lines in live batches."""
        self._endpoint_id = endpoint_id
        self._model = model
        self._answer = answer
        self.batch_pricing = batch_pricing
        self._awaiting = awaiting
        self.sends: dict[str, Sends] = {}
        self.waiting: Counter[str] = Counter()  # per stage: requests a live batch holds

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    @property
    def model(self) -> str:
        return self._model

    async def complete(self, request: ChatRequest) -> Completion:
        completion = self._answer(request)
        if self._awaiting and request.cache_key(self._endpoint_id) in self._awaiting:
            self.waiting[request.tag] += 1
            return completion
        sends = self.sends.setdefault(request.tag, Sends())
        sends.calls += 1
        sends.prompt_tokens += completion.prompt_tokens
        sends.completion_tokens += completion.completion_tokens
        return completion
