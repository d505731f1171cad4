"""The one interface every LLM backend implements.

A backend makes a single attempt at a request and reports how it failed; retries, concurrency,
caching, validation and accounting live once, above it, in `glan.llm.client`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from glan.llm.types import ChatRequest


@dataclass(slots=True)
class Completion:
    """One attempt's raw result, before JSON validation. Internal to the llm layer, built once
    per request on the hot path: a slotted dataclass costs a fraction of a pydantic model."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(ABC):
    #: How many requests this backend can usefully serve at once.
    max_concurrency: int = 1
    #: Replies are billed at the batch price (Price.batch_factor of the online one).
    batch_pricing: bool = False

    @property
    @abstractmethod
    def endpoint_id(self) -> str:
        """What identifies replies of this backend in the cache: kind, address, model; no secret."""

    @property
    @abstractmethod
    def model(self) -> str: ...

    async def preflight(self) -> None:  # noqa: B027 - optional hook
        """Fail fast with a clear message when the backend cannot work at all."""

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """One attempt. Raises TransientError, RateLimited, BadRequest or EndpointFatal on
        failure; a transport that makes its own rounds (glan.llm.batch) raises RequestFailed
        once they are spent."""

    def structured_output_changes(self) -> list[dict[str, Any]]:
        """Where structured output was weakened during the run (which schema, from and to
        which mode, when and why), for the manifest; most backends never weaken it."""
        return []

    def parameter_changes(self) -> list[dict[str, Any]]:
        """What the model refused and is now sent otherwise (a token limit's name, a dropped
        sampling parameter, a schema keyword), for the manifest; most backends never change."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or models."""
