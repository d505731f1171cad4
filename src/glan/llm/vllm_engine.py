"""vLLM's engine in this process: continuous batching, no server to start and no HTTP.

One engine (vLLM's AsyncLLM) per backend, started once, lazily, in `preflight`. Every request
open above is one `generate` call in flight, so vLLM's scheduler batches all of them; the
backend's concurrency is the engine's own `max_num_seqs`, since more in flight would only queue
inside the engine.

The chat is rendered with the model's chat template (or the one given) and tokenized here, once:
the count refuses a prompt that leaves no room in the context before it reaches the engine (a
BadRequest of that request, which the walk replaces), and the engine gets token ids instead of
text to tokenize again.

Structured output is asked per request (`SamplingParams(structured_outputs=...)`, the schema's
grammar-safe projection from `glan.llm.wire`); replies are validated above, as for every backend.
vLLM 0.33 reads `disable_any_whitespace` only from the engine's structured-outputs config (the
per-request field is sent too, for versions that read it), so the engine starts with it: a JSON
grammar that allows any whitespace lets a small model write newlines until max_tokens.

vLLM is imported only in `load_vllm`, when an engine starts; tests inject a stand-in `EngineAPI`
(tests/test_vllm_backend.py checks its surface against vLLM's classes where vLLM imports).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import inspect
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from glan.errors import UserError
from glan.llm.backend import Backend, Completion
from glan.llm.errors import BadRequest, EndpointFatal, TransientError
from glan.llm.memo import IdentityMemo
from glan.llm.signatures import without_ids
from glan.llm.types import ChatRequest, user
from glan.llm.wire import wire_schema

#: The first vLLM whose SamplingParams take `structured_outputs`. Older ones take
#: `guided_decoding`, and recent ones silently ignore the old guided_* fields: either way a
#: mismatch gives unconstrained replies, so a version outside is refused, loudly.
MIN_VLLM = (0, 10, 2)
INSTALL_HINT = "pip install 'glan[vllm]' (vLLM 0.33, on a machine with an NVIDIA GPU)"
#: The model's generation defaults that `vllm serve` applies under a request's own settings;
#: temperature, top_p and the token limit are always the request's.
_MODEL_DEFAULTS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "top_k", "min_p")
#: Finish reasons of a reply that ended normally; vLLM's "abort" and "error" are failures.
_FINISHED = frozenset({"stop", "length", "repetition", None})

_schema_text = IdentityMemo(lambda schema: orjson.dumps(schema).decode())


@dataclass(frozen=True)
class EngineAPI:
    """The parts of vLLM the backend touches: `load_vllm()` gives the real ones, tests give
    stand-ins with the same signatures."""

    #: Engine arguments (AsyncEngineArgs' names, plus `structured_outputs`: the engine's
    #: StructuredOutputsConfig as a dict) -> a started engine with `generate`.
    start: Callable[[dict[str, Any]], Any]
    sampling_params: Callable[..., Any]  # vllm.SamplingParams
    structured_outputs: Callable[..., Any]  # vllm.sampling_params.StructuredOutputsParams
    final_only: Any  # RequestOutputKind.FINAL_ONLY: one output per request, when it ends
    tokens_prompt: Callable[[list[int]], Any]  # token ids -> the prompt `generate` takes
    refused: tuple[type[BaseException], ...]  # what the request caused: a BadRequest
    dead: tuple[type[BaseException], ...]  # the engine died: the run cannot go on


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from a version string ("0.33.0", "0.11.0rc1", "0.34.0.dev3+g1")."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if found is None:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def require_structured_outputs(version: str) -> None:
    """Refuse a vLLM too old for per-request structured output, in one line."""
    parsed = parse_version(version)
    if parsed is not None and parsed < MIN_VLLM:
        need = ".".join(map(str, MIN_VLLM))
        raise EndpointFatal(
            f"vLLM {version} is too old for the vllm backend: it needs vLLM >= {need} "
            f"(per-request structured_outputs; older guided_* fields would give unconstrained "
            f"replies): {INSTALL_HINT}"
        )


def installed_vllm_version() -> str:
    """vLLM's version, read from its metadata without importing it (importing takes seconds)."""
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the vllm backend needs vLLM: {INSTALL_HINT}") from None


def load_vllm() -> EngineAPI:
    """vLLM's real classes, after checking that the installed version has what is used."""
    version = installed_vllm_version()
    require_structured_outputs(version)
    try:
        from vllm import SamplingParams
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError as exc:
        raise EndpointFatal(f"vLLM {version} does not import: {describe(exc)}") from None
    refused: tuple[type[BaseException], ...] = (ValueError, TypeError)  # older vLLM's kinds
    with contextlib.suppress(ImportError):
        from vllm.exceptions import VLLMClientError

        refused = (VLLMClientError, *refused)
    try:
        from vllm.inputs.engine import tokens_input

        def tokens_prompt(ids: list[int]) -> Any:
            return tokens_input(ids)  # already rendered: no deprecated raw-prompt path
    except ImportError:  # before vLLM rendered prompts itself: a TokensPrompt

        def tokens_prompt(ids: list[int]) -> Any:
            return {"prompt_token_ids": ids}

    def start(arguments: dict[str, Any]) -> Any:
        arguments = dict(arguments)
        structured = StructuredOutputsConfig(**arguments.pop("structured_outputs"))
        engine_args = AsyncEngineArgs(**arguments, structured_outputs_config=structured)
        return AsyncLLM.from_engine_args(engine_args)

    return EngineAPI(
        start=start,
        sampling_params=SamplingParams,
        structured_outputs=StructuredOutputsParams,
        final_only=RequestOutputKind.FINAL_ONLY,
        tokens_prompt=tokens_prompt,
        refused=refused,
        dead=(EngineDeadError,),
    )


def engine_identity(
    model: str,
    dtype: str = "auto",
    quantization: str | None = None,
    max_model_len: int | None = None,
    chat_template: str | None = None,
) -> tuple[str, ...]:
    """What changes replies: the model and how it is loaded, the context and the chat template
    (not the GPU count or memory share, which change speed, not text)."""
    template = (
        "model"
        if chat_template is None
        else hashlib.sha256(chat_template.encode()).hexdigest()[:16]
    )
    return (
        "vllm",
        model,
        f"dtype={dtype}",
        f"quantization={quantization or 'none'}",
        f"max_model_len={max_model_len or 'model'}",
        f"chat_template={template}",
    )


def describe(exc: BaseException) -> str:
    """One line for an error; vLLM wraps some (EngineGenerateError) with no text of their own."""
    text = str(exc).strip()
    if not text and exc.__cause__ is not None:
        text = str(exc.__cause__).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class VLLMBackend(Backend):
    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        max_num_seqs: int = 256,
        chat_template: str | None = None,
        api: EngineAPI | None = None,
    ) -> None:
        if api is None:  # fail before any work, without the seconds importing vLLM takes
            require_structured_outputs(installed_vllm_version())
        self._model = model
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len  # the engine's own once started
        self.dtype = dtype
        self.quantization = quantization
        self.max_concurrency = max_num_seqs
        self.chat_template = chat_template
        self._endpoint = "|".join(
            engine_identity(model, dtype, quantization, max_model_len, chat_template)
        )
        self._api = api
        self.engine: Any = None
        self._tokenizer: Any = None
        self._defaults: dict[str, Any] = {}
        self._starting = asyncio.Lock()
        self._ids = itertools.count()

    @property
    def model(self) -> str:
        return self._model

    @property
    def endpoint_id(self) -> str:
        return self._endpoint

    def engine_args(self) -> dict[str, Any]:
        return {
            "model": self._model,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "max_num_seqs": self.max_concurrency,
            "disable_log_stats": True,
            # xgrammar: it compiles every stage schema (wire.py); disable_any_whitespace is
            # refused by vLLM for the "auto" choice.
            "structured_outputs": {"backend": "xgrammar", "disable_any_whitespace": True},
        }

    async def preflight(self) -> None:
        """Start the engine (minutes: the weights load and CUDA graphs are captured). On this
        loop's thread, as `vllm serve` does: the engine's output task belongs to this loop."""
        async with self._starting:
            if self.engine is not None:
                return
            api = self._api or load_vllm()
            try:
                engine = api.start(self.engine_args())
            except UserError:
                raise
            except Exception as exc:
                raise EndpointFatal(
                    f"vLLM could not start {self._model}: {describe(exc)}"
                ) from None
            try:
                await self._adopt(engine)
            except BaseException:
                await _shutdown(engine)
                raise
            self._api = api
            self.engine = engine

    async def _adopt(self, engine: Any) -> None:
        tokenizer = engine.get_tokenizer()
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        config = engine.model_config
        self.max_model_len = config.max_model_len
        diff = config.get_diff_sampling_param()
        self._defaults = {k: diff[k] for k in _MODEL_DEFAULTS if k in diff}
        try:
            self.prompt_ids(ChatRequest(messages=user("hello")))
        except Exception as exc:
            raise EndpointFatal(
                f"{self._model}: the chat template does not render ({describe(exc)}); "
                "give one with llm.chat_template"
            ) from None

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The chat as the model reads it, as token ids: the template renders it and the
        tokenizer counts it in one call (a Mistral tokenizer has no text form to re-encode)."""
        ids = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in request.messages],
            tokenize=True,
            add_generation_prompt=True,
            chat_template=self.chat_template,
            return_dict=False,  # transformers 5 returns a BatchEncoding otherwise
        )
        if isinstance(ids, Mapping):  # a tokenizer that returns one anyway
            ids = ids["input_ids"]
        return list(ids)

    def sampling_params(self, request: ChatRequest, max_tokens: int) -> Any:
        api = self._api
        assert api is not None
        structured = None
        if request.json_schema is not None:
            structured = api.structured_outputs(
                json=_schema_text(wire_schema(request.json_schema)), disable_any_whitespace=True
            )
        return api.sampling_params(
            **self._defaults,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=max_tokens,
            seed=request.effective_seed,
            output_kind=api.final_only,
            structured_outputs=structured,
        )

    async def complete(self, request: ChatRequest) -> Completion:
        if self.engine is None:
            await self.preflight()
        api = self._api
        assert api is not None and self.max_model_len is not None
        try:
            ids = self.prompt_ids(request)
        except Exception as exc:  # a template may refuse a chat (roles out of order, say)
            raise BadRequest(f"the chat template refused this chat: {describe(exc)}") from None
        room = self.max_model_len - len(ids)
        if room < 1:
            raise BadRequest(
                f"prompt too long: {len(ids)} tokens, and the context (max_model_len) holds "
                f"{self.max_model_len} with the reply"
            )
        final = None
        try:  # the parameters too: vLLM validates them (and the schema) as they are built
            params = self.sampling_params(request, min(request.max_tokens, room))
            async for output in self.engine.generate(
                api.tokens_prompt(ids), params, f"glan-{next(self._ids)}"
            ):
                final = output
        except api.dead as exc:
            raise EndpointFatal(f"the vLLM engine died: {describe(exc)}") from None
        except api.refused as exc:
            raise BadRequest(f"vLLM refused the request: {describe(exc)}") from None
        except Exception as exc:
            text = describe(exc)
            signature = f"{type(exc).__name__}|{without_ids(text)}"
            raise TransientError(f"vLLM: {text}", signature) from None
        if final is None or not final.outputs:
            raise TransientError("vLLM ended the request with no output")
        choice = final.outputs[0]
        reason = None if choice.finish_reason is None else str(choice.finish_reason)
        if reason not in _FINISHED:
            raise TransientError(f"vLLM ended the request: {reason}")
        return Completion(choice.text, reason, len(ids), len(choice.token_ids))

    async def aclose(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await _shutdown(engine)


async def _shutdown(engine: Any) -> None:
    result = engine.shutdown()
    if inspect.isawaitable(result):
        await result
