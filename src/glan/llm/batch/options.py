"""The `batch:` block of the config: how requests are grouped into provider batches.

The size limits default to each provider's own (OpenAI: 50,000 requests and 200 MB a file;
Azure OpenAI Global Batch: 100,000 and 200 MB; Anthropic Message Batches: 100,000 and 256 MB),
and a setting replaces them (lower, to see batches sooner; higher, if a provider raises its own).
The files a batch needs (OpenAI, Azure) are deleted once its replies are kept, and carry an
expiry, so that a long run never fills a resource's file quota (Azure: 500 files without
expiry, 10,000 with).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MB = 1_000_000
#: (requests, bytes) a provider takes in one batch.
PROVIDER_LIMITS: dict[str, tuple[int, int]] = {
    "openai": (50_000, 200 * MB),
    "azure": (100_000, 200 * MB),
    "anthropic": (100_000, 256 * MB),
}


class BatchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poll_seconds: float = Field(30.0, gt=0, description="how often live batches are polled")
    max_requests_per_batch: int | None = Field(
        None, ge=1, description="lines per batch (default: the provider's limit)"
    )
    max_bytes_per_batch: int | None = Field(
        None, ge=1024, description="bytes per batch (default: the provider's limit)"
    )
    completion_window: str = Field("24h", description="OpenAI/Azure completion window")
    max_rounds: int = Field(
        4, ge=1, description="batches one request may go in (failed or expired lines go again)"
    )
    max_open_requests: int = Field(
        100_000,
        ge=2,
        description="requests the run keeps open for batches (the walk's work window follows)",
    )
    flush_idle_seconds: float = Field(
        5.0, gt=0, description="a part-full batch is sent when no new request came for this long"
    )
    flush_max_wait_seconds: float = Field(
        600.0, gt=0, description="... or when its oldest request has waited this long"
    )
    download_tries: int = Field(
        6,
        ge=1,
        description="tries to read a batch's status the provider refused, or to download a "
        "finished batch's results (waits doubling from poll_seconds), before they count as "
        "gone (a 404, or no result file, every time) or the run stops",
    )
    delete_files: bool = Field(
        True,
        description="delete a batch's input, output and error files once its replies are kept",
    )
    file_expiry_days: int | None = Field(
        30,
        ge=1,
        le=30,
        description="days after which the provider deletes a batch's files (OpenAI and Azure; "
        "Azure takes 14 to 30); null: the provider's default",
    )

    @property
    def file_expiry_s(self) -> int | None:
        return None if self.file_expiry_days is None else self.file_expiry_days * 86_400

    def limits(self, provider: str) -> tuple[int, int]:
        """(requests, bytes) per batch for this provider: the settings, else its own limits."""
        max_requests, max_bytes = PROVIDER_LIMITS[provider]
        return (self.max_requests_per_batch or max_requests, self.max_bytes_per_batch or max_bytes)
