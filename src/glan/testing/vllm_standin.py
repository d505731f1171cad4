"""A stand-in for vLLM's engine, with its interface, for tests on machines without a GPU.

What goes in and what comes out are shaped as vLLM 0.33's: `generate(prompt, sampling_params,
request_id)` is an async iterator of RequestOutput-like objects (`outputs[0].text`, `token_ids`,
`finish_reason`); SamplingParams and StructuredOutputsParams take vLLM's keyword names (the
tests check them against vLLM's classes where vLLM imports); errors carry vLLM's class names.

It behaves as vLLM does where the backend depends on it: the engine refuses a prompt that fills
the context; a structured reply is a valid instance of the schema, unless the engine allows any
whitespace (vLLM reads `disable_any_whitespace` from the engine's config), in which case it
writes newlines until max_tokens, as small models do under a permissive JSON grammar. Tokens are
whitespace-separated words in a prompt and runs of 4 characters in a reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from glan.llm.vllm_engine import EngineAPI
from glan.testing.fake_replies import instance_from_schema

FINAL_ONLY = "FINAL_ONLY"  # stands for RequestOutputKind.FINAL_ONLY
REPLY_TOKEN_CHARS = 4  # a reply's token is this many characters, about a real BPE token's


def reply_tokens(text: str) -> list[str]:
    return [text[i : i + REPLY_TOKEN_CHARS] for i in range(0, len(text), REPLY_TOKEN_CHARS)]


class VLLMClientError(Exception):
    """vllm.exceptions.VLLMClientError: the request's fault (HTTP 4xx in `vllm serve`)."""


class VLLMValidationError(VLLMClientError):
    """vllm.exceptions.VLLMValidationError."""


class EngineGenerateError(Exception):
    """vllm.v1.engine.exceptions.EngineGenerateError: generate() failed, recoverably."""


class EngineDeadError(Exception):
    """vllm.v1.engine.exceptions.EngineDeadError: the engine process died."""


@dataclass(kw_only=True)
class StructuredOutputsParams:
    """vllm.sampling_params.StructuredOutputsParams (the fields the backend may set)."""

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None


@dataclass(kw_only=True)
class SamplingParams:
    """vllm.SamplingParams (the fields the backend may set, with vLLM's defaults)."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    output_kind: Any = "CUMULATIVE"
    structured_outputs: StructuredOutputsParams | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool


class StandInTokenizer:
    """vLLM's TokenizerLike, as far as the backend uses it. A chat template here is a Python
    format string for one turn (`{role}` and `{content}`); the default marks roles like ChatML."""

    default_template = "<|im_start|>{role}\n{content}<|im_end|>\n"

    def __init__(self) -> None:
        self.rendered: list[str] = []

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        tools: list[dict[str, Any]] | None = None,
        *,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        chat_template: str | None = None,
        return_dict: bool = False,
        **kwargs: Any,
    ) -> str | list[int] | dict[str, list[int]]:
        turn = chat_template or self.default_template
        text = "".join(turn.format(role=m["role"], content=m["content"]) for m in messages)
        if add_generation_prompt:
            text += turn.split("{content}")[0].format(role="assistant")
        self.rendered.append(text)
        if not tokenize:
            return text
        ids = self.encode(text, add_special_tokens=False)  # the template wrote the specials
        return {"input_ids": ids} if return_dict else ids

    def encode(
        self,
        text: str,
        truncation: bool | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        ids = [zlib.crc32(word.encode()) for word in text.split()]
        return [1, *ids] if add_special_tokens else ids  # 1: a BOS the template already wrote


Reply = Callable[[list[int], SamplingParams], str]


def schema_reply(ids: list[int], params: SamplingParams) -> str:
    """A valid instance of the request's schema (varied by the prompt), or plain text."""
    seed = hashlib.sha256(f"{ids}|{params.seed}".encode()).hexdigest()
    structured = params.structured_outputs
    if structured is None or structured.json is None:
        return f"A reply to a prompt of {len(ids)} tokens ({seed[:8]})."
    schema = structured.json
    if isinstance(schema, str):
        schema = orjson.loads(schema)
    return orjson.dumps(instance_from_schema(schema, seed)).decode()


class StandInEngine:
    """vLLM's AsyncLLM, as far as the backend uses it; records what it was asked."""

    def __init__(
        self,
        args: dict[str, Any],
        reply: Reply = schema_reply,
        max_model_len: int = 4096,
        model_defaults: dict[str, Any] | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.args = args
        self.reply = reply
        self.model_config = SimpleNamespace(
            max_model_len=args.get("max_model_len") or max_model_len,
            get_diff_sampling_param=lambda: dict(model_defaults or {}),
        )
        self.tokenizer = tokenizer or StandInTokenizer()  # or a real one (transformers')
        self.calls: list[tuple[list[int], SamplingParams, str]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.hold: asyncio.Event | None = None  # when set, requests wait for it in the batch
        self.fail: BaseException | None = None  # raised by the next generate calls
        self.closed = False

    @property
    def any_whitespace(self) -> bool:
        return not self.args.get("structured_outputs", {}).get("disable_any_whitespace", False)

    def get_tokenizer(self) -> StandInTokenizer:
        return self.tokenizer

    async def generate(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        if self.closed:
            raise EngineDeadError("EngineCore encountered an issue.")
        ids = list(prompt["prompt_token_ids"])
        limit = self.model_config.max_model_len
        if len(ids) >= limit:  # vLLM's InputProcessor._validate_prompt_len
            raise VLLMValidationError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                f"length of {limit}."
            )
        self.calls.append((ids, sampling_params, request_id))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail is not None:
                raise self.fail
            max_tokens = sampling_params.max_tokens or limit - len(ids)
            text = self.reply(ids, sampling_params)
            if sampling_params.structured_outputs is not None and self.any_whitespace:
                text = "{" + "\n" * (REPLY_TOKEN_CHARS * max_tokens)  # never closes
            tokens = reply_tokens(text)
            finish = "stop"
            if len(tokens) > max_tokens:
                tokens, finish = tokens[:max_tokens], "length"
            text = "".join(tokens)
            token_ids = [zlib.crc32(t.encode()) for t in tokens]
            output = CompletionOutput(0, text, token_ids, finish_reason=finish)
            yield RequestOutput(request_id, None, ids, [output], finished=True)
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self.closed = True


@dataclass
class StandIn:
    """The stand-in API and the engines it started (one per backend that started)."""

    reply: Reply = schema_reply
    max_model_len: int = 4096
    model_defaults: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    engines: list[StandInEngine] = field(default_factory=list)

    def start(self, args: dict[str, Any]) -> StandInEngine:
        engine = StandInEngine(
            args, self.reply, self.max_model_len, self.model_defaults, self.tokenizer
        )
        self.engines.append(engine)
        return engine

    @property
    def engine(self) -> StandInEngine:
        return self.engines[-1]

    def api(self) -> EngineAPI:
        return EngineAPI(
            start=self.start,
            sampling_params=SamplingParams,
            structured_outputs=StructuredOutputsParams,
            final_only=FINAL_ONLY,
            tokens_prompt=lambda ids: {"type": "token", "prompt_token_ids": ids},
            refused=(VLLMClientError, ValueError, TypeError),
            dead=(EngineDeadError,),
        )
