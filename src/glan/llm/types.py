"""The request and response every backend speaks.

Nothing here knows about GLAN: a request is a chat, some sampling parameters and an optional
JSON schema for the reply.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from glan.llm.memo import IdentityMemo

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class ChatRequest(BaseModel):
    """One chat-completion request.

    `sample_index` makes n samples of one prompt n distinct requests (distinct cache keys, distinct
    seeds); `seed` is the run's seed, and the seed actually sent derives from both.
    """

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0
    sample_index: int = 0
    json_schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    # Which stage asked: used for accounting only, never sent and never part of the cache key.
    tag: str = "default"
    # False: `max_tokens` bounds a reasoning model's hidden reasoning too (no headroom is added
    # to it, glan.llm.refusals.BodyShape), so a probe stays a few tokens. Not in the cache key.
    reasoning_headroom: bool = True

    @property
    def effective_seed(self) -> int:
        """The seed sent to the endpoint: a function of the run's seed and the sample index."""
        return (self.seed * 1_000_003 + self.sample_index * 7_919 + 17) % 2_147_483_647

    def cache_key(self, endpoint: str) -> str:
        """A hash of everything that determines the reply.

        `endpoint` names the backend, base URL and model; secrets never enter it.
        """
        payload = (
            endpoint,
            [(m.role, m.content) for m in self.messages],
            self.temperature,
            self.top_p,
            self.max_tokens,
            self.effective_seed,
            self.sample_index,
            None if self.json_schema is None else _sorted_json(self.json_schema),
        )
        return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


# Stage schemas are a handful of module-level dicts sent with every request: the sorted JSON of
# each is computed once (orjson writes a Fragment's bytes as they are, so the key is unchanged).
_sorted_json = IdentityMemo(
    lambda schema: orjson.Fragment(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResponse(BaseModel):
    text: str
    parsed: Any = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cached: bool = False
    # How many re-asks it took to get a schema-valid reply (0 when the first was valid).
    reasks: int = 0


def user(content: str, system: str | None = None) -> tuple[Message, ...]:
    """The common case: an optional system turn and one user turn."""
    # model_construct: these are built once per request on the hot path, from our own strings.
    msgs = [Message.model_construct(role="system", content=system)] if system else []
    msgs.append(Message.model_construct(role="user", content=content))
    return tuple(msgs)
