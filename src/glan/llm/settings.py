"""Which backend to use and how to reach it: the part of the config the llm layer reads.

Settings are a union discriminated by `backend`, so each kind has only its own fields and
defaults: a base URL means nothing to an in-process model, and a thread count nothing to an
HTTP endpoint. `tiny` tells callers whether the model is the embedded 135M one, whose replies
must be kept short; any other model (a 70B GGUF on the local backend included) gets the
normal sizes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from glan.llm.backend import Backend

EMBEDDED_MODELS = ("smollm2",)


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


class OpenAISettings(BaseModel):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, llama.cpp, TGI)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai"] = Field("openai", description="an OpenAI-compatible endpoint")
    model: str | None = Field(None, description="model name as the endpoint knows it")
    base_url: str = Field("https://api.openai.com/v1", description="the endpoint's /v1 URL")
    api_key_env: str | None = Field(
        None, description="name of the environment variable holding the API key (never the key)"
    )
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")
    schema_mode: Literal["json_schema", "json_object", "prompt"] = Field(
        "json_schema",
        description="structured output to start with; a schema the server refuses for two "
        "different requests steps down (json_object, then the schema in the prompt)",
    )

    @property
    def tiny(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return self.model or "gpt-4o-mini"

    def identity(self) -> tuple[str, ...]:
        return ("openai", self.base_url, self.model_name)


BackendSettings = Annotated[LocalSettings | OpenAISettings, Field(discriminator="backend")]
BACKEND_KINDS = {"local": LocalSettings, "openai": OpenAISettings}


def create_backend(settings: LocalSettings | OpenAISettings, concurrency: int = 64) -> Backend:
    if isinstance(settings, LocalSettings):
        from glan.llm.local import LocalBackend

        return LocalBackend(settings.model, n_threads=settings.n_threads, n_ctx=settings.n_ctx)
    from glan.llm.openai_http import OpenAIBackend

    return OpenAIBackend(
        model=settings.model_name,
        base_url=settings.base_url,
        api_key_env=settings.api_key_env,
        max_concurrency=concurrency,
        timeout_s=settings.timeout_s,
        schema_mode=settings.schema_mode,
    )
