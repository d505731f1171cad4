"""OpenAI's Batch API (and Azure OpenAI Global Batch, the same API behind another address).

A batch is a JSONL file uploaded with purpose "batch", then a batch created from it; each line
is a chat-completions body (glan.llm.openai_http.chat_body: the same body the online backend
sends). Output and error files come back in any order; expired and cancelled lines appear in the
error file (or nowhere) and are sent again. Azure: `base_url` is the resource's
`https://NAME.openai.azure.com/openai`, `api_version` its API version, `model` the batch
deployment's name; its key goes in the `api-key` header. Files carry an expiry
(`expires_after`, `output_expires_after`) when one is set; Azure's "fail fast" quota refusal of
a create and a refused upload for the files held raise OverQuota. A finished batch that counts
lines done and offers no output file has results not ready yet (`Remote.unready`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any, cast

import orjson

from glan.llm.batch.api import (
    BatchAPI,
    LineResult,
    OverQuota,
    Refused,
    Remote,
    normal_status,
    read_key,
    timestamp,
)
from glan.llm.batch.ledger import Job
from glan.llm.batch.online_probe import learn_refusals
from glan.llm.openai_http import (
    NOT_A_COMPLETION,
    SCHEMA_WORDS,
    SchemaMode,
    chat_body,
    completion_from,
)
from glan.llm.refusals import error_object, read_refusal
from glan.llm.types import ChatRequest

_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Batch-level failures that mean "too much enqueued now", not "this file is wrong".
_QUOTA_CODES = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "quota_exceeded"})
_MISSING_CODES = frozenset({"batch_expired", "batch_cancelled"})


def multipart(fields: dict[str, bytes], file: tuple[str, str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body as bytes (sent again as is when a try fails)."""
    boundary = f"glan-{uuid.uuid4().hex}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    name, filename, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def is_azure(base_url: str) -> bool:
    host = base_url.split("//", 1)[-1].split("/", 1)[0]
    return host.endswith((".openai.azure.com", ".cognitiveservices.azure.com"))


class OpenAIBatchAPI(BatchAPI):
    batches_path = "/batches"
    schema_modes = ("strict", "json_schema", "json_object", "prompt")

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = None,
        api_version: str | None = None,
        completion_window: str = "24h",
        schema_mode: SchemaMode = "strict",
        timeout_s: float = 600.0,
        reasoning_headroom: int = 0,
    ) -> None:
        self.model = model
        self.api_version = api_version
        self.api_key_env = api_key_env
        self.completion_window = completion_window
        self.schema_mode: SchemaMode = schema_mode
        azure = api_version is not None or is_azure(base_url)
        self.kind = "azure" if azure else "openai"
        key = read_key(api_key_env, "AZURE_OPENAI_API_KEY" if azure else "OPENAI_API_KEY")
        headers = {}
        if key:
            headers = {"api-key": key} if azure else {"Authorization": f"Bearer {key}"}
        super().__init__(base_url, headers, timeout_s)
        self.shape.reasoning_headroom = reasoning_headroom
        # Azure's batch lines name the path without the version prefix.
        self.path = "/chat/completions" if azure else "/v1/chat/completions"

    @property
    def access(self) -> dict[str, Any]:
        return {
            "provider": "openai-batch",
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "api_version": self.api_version,
        }

    def _url(self, path: str) -> str:
        url = f"{self.base_url}{path}"
        if self.api_version:
            url += ("&" if "?" in url else "?") + f"api-version={self.api_version}"
        return url

    async def preflight(self) -> None:
        await super().preflight()
        await learn_refusals(self)  # what the model refuses, before a line is built

    def line(self, key: str, request: ChatRequest) -> bytes:
        mode = cast(SchemaMode, self.mode_for(request.schema_name))
        body = chat_body(self.model, request, mode, self.shape)
        return (
            orjson.dumps({"custom_id": key, "method": "POST", "url": self.path, "body": body})
            + b"\n"
        )

    async def create(
        self, job: Job, lines: list[bytes], on_file: Callable[[str], None], known: set[str]
    ) -> str:
        data = b"".join(lines)
        expiry = self.file_expiry_s

        async def upload(with_expiry: bool) -> Any:
            fields = {"purpose": b"batch"}
            if with_expiry and expiry:
                fields["expires_after[anchor]"] = b"created_at"
                fields["expires_after[seconds]"] = str(expiry).encode()
            body, content_type = multipart(fields, ("file", f"glan-{job.local_id}.jsonl", data))
            headers = {"Content-Type": content_type}
            # An upload repeated after a lost answer costs nothing (a file is not a batch).
            return await self.call("POST", "/files", data=body, headers=headers)

        try:
            uploaded = orjson.loads(await self.with_optional("expires_after", upload))
        except Refused as exc:
            if "quota" in str(exc).lower():  # Azure: too many files held; OpenAI: storage
                raise OverQuota(str(exc)) from None
            raise
        on_file(uploaded["id"])
        job.file_id = uploaded["id"]
        batch: dict[str, Any] = {
            "input_file_id": uploaded["id"],
            "endpoint": self.path,
            "completion_window": self.completion_window,
            "metadata": {"glan_job": job.local_id},
        }

        async def create(with_expiry: bool) -> str:
            if with_expiry and expiry:
                batch["output_expires_after"] = {"anchor": "created_at", "seconds": expiry}
            else:
                batch.pop("output_expires_after", None)
            return await self.create_batch(job, known, "/batches", json=batch)

        try:
            return await self.with_optional("output_expires_after", create)
        except Refused as exc:
            # Azure's "fail fast" regions refuse the create itself for the enqueued tokens.
            if any(code in str(exc) for code in _QUOTA_CODES):
                raise OverQuota(str(exc)) from None
            raise

    async def delete_file(self, file_id: str) -> None:
        with contextlib.suppress(Refused):  # already gone (expired, deleted): nothing to do
            await self.call("DELETE", f"/files/{file_id}")

    async def find(self, job: Job, known: set[str]) -> str | None:
        if job.file_id is None:
            return None  # nothing was uploaded, so no batch can exist
        after: str | None = None
        while True:
            query = "/batches?limit=100" + (f"&after={after}" if after else "")
            page = orjson.loads(await self.call("GET", query))
            for batch in page.get("data", []):
                meta = batch.get("metadata") or {}
                mine = batch.get("input_file_id") == job.file_id
                if (mine or meta.get("glan_job") == job.local_id) and batch["id"] not in known:
                    return batch["id"]
                if timestamp(batch.get("created_at")) < job.created - 3600:
                    return None  # listed newest first: older ones predate the job
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def status(self, batch_id: str) -> Remote:
        batch = orjson.loads(await self.call("GET", f"/batches/{batch_id}"))
        status = normal_status(batch.get("status"))
        counts = batch.get("request_counts") or {}
        errors = (batch.get("errors") or {}).get("data") or []
        refused = None
        if status == "failed" and errors:
            refused = "; ".join(
                f"line {e['line']}: {e.get('message')} ({e.get('code')})"
                if e.get("line") is not None
                else f"{e.get('message')} ({e.get('code')})"
                for e in errors[:3]
            ) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        files = tuple(batch[k] for k in ("output_file_id", "error_file_id") if batch.get(k))
        done = int(counts.get("completed") or 0)
        unready = None
        if status in _TERMINAL and done and not batch.get("output_file_id"):
            unready = f"{status} with {done} lines done and no output file"
        usage = batch.get("usage") or {}
        tokens = None
        if "input_tokens" in usage:  # OpenAI's batches since September 2025; not Azure's
            tokens = (int(usage["input_tokens"] or 0), int(usage.get("output_tokens") or 0))
        return Remote(
            status=status,
            terminal=status in _TERMINAL,
            cancelled=status in ("cancelling", "cancelled"),
            done=done,
            failed=int(counts.get("failed") or 0),
            refused=refused,
            retry_later=any(e.get("code") in _QUOTA_CODES for e in errors),
            sources=tuple(f"/files/{file_id}/content" for file_id in files),
            files=files,
            tokens=tokens,
            unready=unready,
        )

    def parse(self, raw: bytes) -> LineResult:
        return parse_line(raw)


def parse_line(raw: bytes) -> LineResult:
    """One line of an output or error file."""
    data = orjson.loads(raw)
    key = data.get("custom_id") or ""
    response = data.get("response") or {}
    error = data.get("error") or {}
    code = response.get("status_code")
    if code == 200:
        try:
            return LineResult(key, "ok", completion_from(response.get("body") or {}))
        except NOT_A_COMPLETION:
            return LineResult(key, "server", error=f"not a chat completion: {raw[:120]!r}")
    if error:
        kind = "missing" if error.get("code") in _MISSING_CODES else "server"
        return LineResult(key, kind, error=f"{error.get('code')}: {error.get('message')}")
    body = response.get("body") or {}
    message = error_object(body).get("message")
    detail = f"HTTP {code}: {message or str(body)[:200]}"
    if code is not None and 400 <= code < 500 and code != 429:
        refusal = read_refusal(body)
        if refusal.kind != "other":
            return LineResult(key, "refused", error=detail, refusal=refusal)
        if any(word in str(message).lower() for word in SCHEMA_WORDS):
            return LineResult(key, "schema", error=detail)
        return LineResult(key, "request", error=detail)
    return LineResult(key, "server", error=detail)
