"""What a provider's 400 says it refuses, read from its own error object, and what is sent instead.

Today's models refuse parameters older ones took: OpenAI's reasoning models (o-series, gpt-5
family, and Azure deployments of them) answer 400 `unsupported_parameter` for `max_tokens`
("use max_completion_tokens"), `top_p` and sometimes `temperature`, and `unsupported_value` for
any non-default temperature; newer Claude models refuse `temperature` ("deprecated for this
model"). A strict structured-output schema is refused for a keyword OpenAI does not take there
("'minLength' is not permitted"). Each of these is a property of the endpoint and model, never
of one body, so the decision is the endpoint's: `BodyShape` records it once and every later
body (online or in a batch) is built accordingly. Which body met the refusal first changes
nothing, so records never depend on timing. A refusal is never a reason to give a unit up.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

#: Sampling parameters a model may refuse: dropped, so the model's own defaults apply.
OPTIONAL_SAMPLING = ("temperature", "top_p", "seed")
#: OpenAI's names for the reply's token limit, the older first (every compatible server takes it).
TOKEN_LIMIT_NAMES = ("max_tokens", "max_completion_tokens")
# Only these are the shape's to change: a refused response_format is the structured-output
# step-down's (glan.llm.openai_http), anything else the body's own.
_ADAPTABLE = frozenset(OPTIONAL_SAMPLING + TOKEN_LIMIT_NAMES)
_REFUSAL_CODES = frozenset({"unsupported_parameter", "unsupported_value"})
_NAMED = re.compile(
    r"unsupported (?:parameter|value):\s*'(\w+)'"  # OpenAI, Azure, and gateways passing it on
    r"|don't support (\w+)="  # LiteLLM's own: "O-series models don't support temperature=0.7"
    r"|does not support parameters?: \[?'(\w+)'",  # LiteLLM's: "... parameters: ['top_p']"
    re.IGNORECASE,
)
_NOT_PERMITTED = re.compile(r"'(\w+)' is not permitted")
# Anthropic names no `param`: its message does ("`temperature` is deprecated for this model",
# "temperature is not supported for M when set to non-default values", "`temperature` and
# `top_p` cannot both be specified").
_ANTHROPIC_REFUSAL = re.compile(r"deprecated|not supported|unsupported|cannot|only the default")
#: How many adaptations one body may meet before its refusal counts as its own.
MAX_ADAPTATIONS = 8


@dataclass(frozen=True, slots=True)
class Refusal:
    """`param`: a request parameter the model refuses. `keyword`: a JSON-schema keyword the
    structured-output mode refuses. `other`: anything else (the body's own fault, or a schema
    refusal that names nothing: see the structured-output step-down)."""

    kind: Literal["param", "keyword", "other"]
    name: str | None
    detail: str


def error_object(raw: bytes | str | dict[str, Any] | None) -> dict[str, Any]:
    """The `error` object of an OpenAI- or Anthropic-shaped error body ({} when there is none)."""
    data: Any = raw
    if isinstance(raw, bytes | str):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"message": raw if isinstance(raw, str) else raw.decode("utf-8", "replace")}
    if not isinstance(data, dict):
        return {}
    error = data.get("error")
    if isinstance(error, dict):
        raw_inner = (error.get("metadata") or {}).get("raw")
        if isinstance(raw_inner, str):  # OpenRouter: the provider's own error, as text
            inner = error_object(raw_inner)
            if inner.get("message") and inner.get("message") != raw_inner:
                return inner
        return error
    return {"message": error} if isinstance(error, str) else {}


def read_refusal(raw: bytes | str | dict[str, Any] | None) -> Refusal:
    """What a 400's body says was refused (OpenAI's `param`/`code`, else its message's words)."""
    error = error_object(raw)
    message = str(error.get("message") or "")
    detail = message[:300] or str(raw)[:300]
    param = error.get("param")
    code = error.get("code")
    keyword = _NOT_PERMITTED.search(message)
    if keyword and (param in (None, "response_format") or "schema" in message.lower()):
        return Refusal("keyword", keyword.group(1), detail)
    found = _NAMED.search(message)
    named = next((g for g in found.groups() if g), None) if found else None
    if param in _ADAPTABLE and (code in _REFUSAL_CODES or named):
        return Refusal("param", param, detail)
    if named in _ADAPTABLE:  # a gateway kept the message, not param/code
        return Refusal("param", named, detail)
    if error.get("type") == "invalid_request_error" and _ANTHROPIC_REFUSAL.search(message.lower()):
        for name in OPTIONAL_SAMPLING:
            if re.search(rf"\b{name}\b", message):
                return Refusal("param", name, detail)
    return Refusal("other", None, detail)


@dataclass
class BodyShape:
    """What one endpoint and model takes: the token limit's name, the sampling parameters it
    refuses, the schema keywords its strict mode refuses. Shared by every body built for the
    endpoint (online requests or batch lines); thread-safe, as batch lines are built on the
    event loop while progress reads the changes."""

    token_limit: str | None = TOKEN_LIMIT_NAMES[0]  # None: both names refused, none sent
    # Added to the limit once it goes as max_completion_tokens: a model that takes only that
    # name counts its hidden reasoning in it, and a limit sized for the reply alone would be
    # spent on reasoning, leaving an empty (and paid) reply.
    reasoning_headroom: int = 0
    dropped: frozenset[str] = frozenset()
    refused_keywords: frozenset[str] = frozenset()
    version: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sends(self, name: str) -> bool:
        """Whether bodies built now carry this parameter or keyword."""
        if name in TOKEN_LIMIT_NAMES:
            return name == self.token_limit
        return name not in self.dropped and name not in self.refused_keywords

    def adapt(self, refusal: Refusal, built_at: int) -> bool:
        """Learn from a refusal of a body built at `built_at` (a version of this shape); whether
        the body should go again, built as the endpoint now takes it. False: nothing this shape
        can change (the refusal is the body's own)."""
        with self._lock:
            if refusal.kind == "other" or refusal.name is None:
                return False
            name = refusal.name
            if built_at != self.version and not self.sends(name):
                return True  # learnt already, from another body: this one was built before
            if refusal.kind == "keyword":
                if name in self.refused_keywords:
                    return False
                self.refused_keywords |= {name}
                self._note("schema keyword", name, "described in the schema's text", refusal)
                return True
            if name in TOKEN_LIMIT_NAMES:
                if name != self.token_limit:
                    return False
                other = TOKEN_LIMIT_NAMES[1 - TOKEN_LIMIT_NAMES.index(name)]
                tried = {c["name"] for c in self.changes if c["what"] == "parameter"}
                # Both names refused (a server that takes neither): the model's own limit.
                self.token_limit = None if other in tried else other
                now = f"sent as {other}" if self.token_limit else "not sent (neither name taken)"
                self._note("parameter", name, now, refusal)
                return True
            if name in OPTIONAL_SAMPLING and name not in self.dropped:
                self.dropped |= {name}
                self._note("parameter", name, "not sent (the model's default applies)", refusal)
                return True
            return False

    def _note(self, what: str, name: str, now: str, refusal: Refusal) -> None:
        self.version += 1
        self.changes.append(
            {"what": what, "name": name, "now": now, "at": time.time(), "why": refusal.detail}
        )

    def apply(self, body: dict[str, Any], headroom: bool = True) -> dict[str, Any]:
        """An OpenAI chat body as this endpoint takes it (built with `max_tokens`; `headroom`:
        whether the reasoning headroom is added to the limit)."""
        if self.token_limit != "max_tokens" and "max_tokens" in body:
            limit = body.pop("max_tokens")
            if self.token_limit is not None:
                body[self.token_limit] = limit + (self.reasoning_headroom if headroom else 0)
        for name in self.dropped:
            body.pop(name, None)
        return body
