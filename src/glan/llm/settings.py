"""Which backend to use and how to reach it: the part of the config the llm layer reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glan.llm.backend import Backend


class BackendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai"] = "local"
    model: str | None = Field(
        None, description="model name; for local: smollm2, a .gguf or owner/repo"
    )
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = Field(
        None, description="name of the environment variable holding the API key (never the key)"
    )
    timeout_s: float = Field(120.0, gt=0)
    schema_mode: Literal["json_schema", "json_object", "prompt"] = "json_schema"
    n_threads: int | None = Field(None, ge=1, description="local backend: CPU threads")
    n_ctx: int = Field(4096, ge=512, description="local backend: context window")

    def identity(self) -> tuple[str, str, str | None]:
        """What makes two settings the same endpoint (one client, one limiter)."""
        return (self.backend, self.base_url if self.backend == "openai" else "", self.model)


def create_backend(settings: BackendSettings, concurrency: int = 64) -> Backend:
    if settings.backend == "local":
        from glan.llm.local import LocalBackend

        return LocalBackend(settings.model, n_threads=settings.n_threads, n_ctx=settings.n_ctx)
    from glan.llm.openai_http import OpenAIBackend

    return OpenAIBackend(
        model=settings.model or "gpt-4o-mini",
        base_url=settings.base_url,
        api_key_env=settings.api_key_env,
        max_concurrency=concurrency,
        timeout_s=settings.timeout_s,
        schema_mode=settings.schema_mode,
    )
