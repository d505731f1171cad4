"""Which backend to use and how to reach it: the part of the config the llm layer reads.

Settings are a union discriminated by `backend`, so each kind has only its own fields and
defaults: a base URL means nothing to an in-process model, and a thread count nothing to an
HTTP endpoint. `tiny` tells callers whether the model is the embedded 135M one, whose replies
must be kept short; any other model (a 70B GGUF on the local backend included) gets the
normal sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from glan.errors import UserError
from glan.llm.backend import Backend
from glan.llm.batch.options import BatchOptions

if TYPE_CHECKING:
    from glan.llm.batch.api import BatchAPI

EMBEDDED_MODELS = ("smollm2",)


def http_endpoint_id(kind: str, base_url: str, model: str) -> str:
    """What an endpoint reached over HTTP caches its replies under (its backend's
    endpoint_id), known without making the backend (which reads the key)."""
    return f"{kind}|{base_url.rstrip('/')}|{model}"


class LocalSettings(BaseModel):
    """An in-process llama.cpp model: the packaged SmolLM2, a .gguf path or a hub id."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local"] = Field("local", description="in-process llama.cpp")
    model: str | None = Field(None, description="smollm2 (default), a .gguf path or owner/repo")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads; the default leaves a core free (see local.py)"
    )
    n_ctx: int = Field(4096, ge=512, description="context window in tokens")

    @property
    def tiny(self) -> bool:
        return (self.model or "smollm2") in EMBEDDED_MODELS

    @property
    def model_name(self) -> str:
        return self.model or "smollm2"

    def identity(self) -> tuple[str, ...]:
        """What makes two settings the same endpoint (one client, one limiter)."""
        return ("local", self.model_name)

    def endpoint_id(self) -> str:
        """The backend's endpoint_id (what its replies are cached under), without making it."""
        from glan.llm.local import resolve_model

        return f"local|{resolve_model(self.model).name}"


class _OpenAIEndpoint(BaseModel):
    """What the online and batch OpenAI-compatible kinds share: one definition."""

    model_config = ConfigDict(extra="forbid")

    backend: str  # each kind's own literal
    model: str | None = Field(None, description="model name as the endpoint knows it")
    base_url: str = Field("https://api.openai.com/v1", description="the endpoint's /v1 URL")
    api_key_env: str | None = Field(
        None,
        description="name of the environment variable holding the API key, never the key "
        "(default OPENAI_API_KEY; Azure batch: AZURE_OPENAI_API_KEY)",
    )
    schema_mode: Literal["strict", "json_schema", "json_object", "prompt"] = Field(
        "strict",
        description="structured output to start with: strict (constrained decoding where the "
        "schema allows it), json_schema, json_object, prompt; a schema or endpoint that refuses "
        "one steps down to the next",
    )
    reasoning_headroom_tokens: int = Field(
        8192,
        ge=0,
        description="added to a request's token limit when the model takes only "
        "max_completion_tokens (reasoning models: the limit counts their hidden reasoning)",
    )

    @property
    def tiny(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return self.model or "gpt-4o-mini"

    def identity(self) -> tuple[str, ...]:
        """What makes two settings the same endpoint (one client, one limiter)."""
        return (self.backend, self.base_url, self.model_name)

    def endpoint_id(self) -> str:
        return http_endpoint_id(self.backend, self.base_url, self.model_name)


class OpenAISettings(_OpenAIEndpoint):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, llama.cpp, TGI)."""

    backend: Literal["openai"] = Field("openai", description="an OpenAI-compatible endpoint")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")


class VLLMSettings(BaseModel):
    """vLLM's engine in this process (`glan[vllm]`, a GPU): continuous batching, no server."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm"] = Field("vllm", description="vLLM's engine in process")
    model: str | None = Field(None, description="a Hugging Face model directory or hub id")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the engine spreads over")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="share of each GPU's memory the engine may take"
    )
    max_model_len: int | None = Field(
        None, ge=16, description="context window in tokens; default: the model's own"
    )
    dtype: str = Field("auto", description="auto, bfloat16, float16, float32")
    quantization: str | None = Field(None, description="awq, gptq, fp8, ... (None: as saved)")
    max_num_seqs: int = Field(
        256, ge=1, description="sequences the engine batches at once: the requests kept in flight"
    )
    chat_template: str | None = Field(
        None, description="a Jinja chat template (file or text); default: the tokenizer's"
    )

    @property
    def tiny(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return self.model or "(no model)"

    def template_text(self) -> str | None:
        """The chat template itself. As with `vllm serve --chat-template`, a value holding any of
        `{`, `}` or a newline is the template; anything else is a file to read."""
        if self.chat_template is None:
            return None
        if any(c in self.chat_template for c in "{}\n"):
            return self.chat_template
        path = Path(self.chat_template).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the chat template {path}: {exc.strerror}") from None

    def identity(self) -> tuple[str, ...]:
        from glan.llm.vllm_engine import engine_identity

        return engine_identity(
            self.model_name, self.dtype, self.quantization, self.max_model_len, self.template_text()
        )

    def endpoint_id(self) -> str:
        """The backend's endpoint_id (what its replies are cached under), without making it."""
        return "|".join(self.identity())


class OpenAIBatchSettings(_OpenAIEndpoint):
    """OpenAI's Batch API at half price; Azure OpenAI Global Batch with `api_version` (the
    base URL is the resource's https://NAME.openai.azure.com/openai, the model its batch
    deployment). Batch sizes and polling are the `batch:` block's (glan.llm.batch.options)."""

    backend: Literal["openai-batch"] = Field(
        "openai-batch", description="OpenAI's (or Azure's) Batch API"
    )
    api_version: str | None = Field(None, description="Azure's api-version, e.g. 2024-10-21")
    timeout_s: float = Field(600.0, gt=0, description="one upload, download or control call")


class AnthropicBatchSettings(BaseModel):
    """Anthropic's Message Batches at half price."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["anthropic-batch"] = Field(
        "anthropic-batch", description="Anthropic's Message Batches"
    )
    model: str | None = Field(None, description="e.g. claude-sonnet-4-5")
    base_url: str = Field("https://api.anthropic.com/v1", description="the API's /v1 URL")
    api_key_env: str | None = Field(
        None, description="environment variable holding the key (default ANTHROPIC_API_KEY)"
    )
    timeout_s: float = Field(600.0, gt=0, description="one create, download or control call")
    schema_mode: Literal["json_schema", "tool"] = Field(
        "json_schema",
        description="json_schema: Anthropic's JSON-schema output (stepping down to tool when a "
        "model refuses it); tool: a tool whose input is the schema",
    )

    @property
    def tiny(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return self.model or "claude-sonnet-4-5"

    def identity(self) -> tuple[str, ...]:
        return ("anthropic-batch", self.base_url, self.model_name)

    def endpoint_id(self) -> str:
        return http_endpoint_id(self.backend, self.base_url, self.model_name)


AnySettings = (
    LocalSettings | OpenAISettings | VLLMSettings | OpenAIBatchSettings | AnthropicBatchSettings
)
AnyBackendSettings = AnySettings
BackendSettings = Annotated[AnySettings, Field(discriminator="backend")]
BACKEND_KINDS: dict[str, type[AnySettings]] = {
    "local": LocalSettings,
    "openai": OpenAISettings,
    "vllm": VLLMSettings,
    "openai-batch": OpenAIBatchSettings,
    "anthropic-batch": AnthropicBatchSettings,
}
BATCH_KINDS = ("openai-batch", "anthropic-batch")


def create_backend(
    settings: AnySettings,
    concurrency: int = 64,
    batch: BatchOptions | None = None,
    ledger: Path | None = None,
) -> Backend:
    """`batch` and `ledger` (the run directory's SQLite file) serve the batch kinds only."""
    if isinstance(settings, OpenAIBatchSettings | AnthropicBatchSettings):
        return _batch_backend(settings, batch or BatchOptions(), ledger)
    if isinstance(settings, LocalSettings):
        from glan.llm.local import LocalBackend

        return LocalBackend(settings.model, n_threads=settings.n_threads, n_ctx=settings.n_ctx)
    if isinstance(settings, VLLMSettings):
        from glan.llm.vllm_engine import VLLMBackend

        if settings.model is None:
            raise UserError(
                "the vllm backend needs a model: --model Qwen/Qwen2.5-0.5B-Instruct "
                "(a hub id or a model directory)"
            )
        return VLLMBackend(
            settings.model,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=settings.max_model_len,
            dtype=settings.dtype,
            quantization=settings.quantization,
            max_num_seqs=settings.max_num_seqs,
            chat_template=settings.template_text(),
        )
    from glan.llm.openai_http import OpenAIBackend

    return OpenAIBackend(
        model=settings.model_name,
        base_url=settings.base_url,
        api_key_env=settings.api_key_env,
        max_concurrency=concurrency,
        timeout_s=settings.timeout_s,
        schema_mode=settings.schema_mode,
        reasoning_headroom=settings.reasoning_headroom_tokens,
    )


def _batch_backend(
    settings: OpenAIBatchSettings | AnthropicBatchSettings,
    options: BatchOptions,
    ledger: Path | None,
) -> Backend:
    from glan.llm.batch.transport import BatchBackend

    if ledger is None:
        raise UserError(
            f"the {settings.backend} backend works inside a run directory (glan generate): "
            "its batches are recorded there"
        )
    api = batch_api(settings.model_dump(), options.completion_window)
    return BatchBackend(api, ledger, options)


def batch_api(fields: dict[str, Any], completion_window: str = "24h") -> BatchAPI:
    """A provider's batch API from its settings, or from what the ledger recorded of them
    (`glan batches --cancel`: the kind, model, address and key variable; never the key)."""
    kind = fields.get("backend") or fields["provider"]
    settings = BACKEND_KINDS[kind].model_validate(
        {k: v for k, v in fields.items() if k in BACKEND_KINDS[kind].model_fields and v is not None}
        | {"backend": kind}
    )
    if isinstance(settings, OpenAIBatchSettings):
        from glan.llm.batch.openai_batch import OpenAIBatchAPI

        return OpenAIBatchAPI(
            settings.model_name,
            settings.base_url,
            settings.api_key_env,
            settings.api_version,
            completion_window,
            settings.schema_mode,
            settings.timeout_s,
            settings.reasoning_headroom_tokens,
        )
    assert isinstance(settings, AnthropicBatchSettings)
    from glan.llm.batch.anthropic_batch import AnthropicBatchAPI

    return AnthropicBatchAPI(
        settings.model_name,
        settings.base_url,
        settings.api_key_env,
        settings.schema_mode,
        settings.timeout_s,
    )
