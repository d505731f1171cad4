"""Anthropic's Message Batches API.

A glan chat request becomes Messages API params: system turns go apart (`system`), max_tokens
is always sent (Anthropic requires it), temperature is capped at 1 (its range) and top_p and the
seed are not sent (recent models refuse temperature with top_p; there is no seed). Newer models
refuse `temperature` itself ("deprecated for this model"): a line refused so goes again without
it, and so does every later line (glan.llm.refusals). The schema is enforced with Anthropic's
JSON-schema output (`output_config.format`) where the model offers it, else with a tool whose
input is the schema and which the model must call; a line refused for its structured-output
form steps that schema down to the tool. Replies are validated above, as for every backend.
Anthropic batches carry no metadata, so the run's ledger is the only link to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson

from glan.llm.backend import Completion
from glan.llm.batch.api import BatchAPI, LineResult, Remote, normal_status, read_key, timestamp
from glan.llm.batch.ledger import Job
from glan.llm.refusals import read_refusal
from glan.llm.types import ChatRequest
from glan.llm.wire import closed, described, wire_schema

AnthropicSchemaMode = Literal["json_schema", "tool"]
API_VERSION = "2023-06-01"
# JSON-schema output refuses these keywords; the reply is checked against them afterwards.
_UNSUPPORTED = frozenset(
    {"minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "pattern"}
)
_SCHEMA_WORDS = ("output_config", "output_format", "structured output", "json_schema", "schema")
_STOP = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop", "tool_use": "stop"}


def output_schema(schema: dict[str, Any]) -> Any:
    """The schema in the subset Anthropic's JSON-schema output compiles: closed objects, no
    length or range bounds. A dropped bound is written into the description (as Anthropic's
    SDK does), so the model still reads it; the reply is validated against it afterwards."""
    return described(closed(schema), _UNSUPPORTED)


class AnthropicBatchAPI(BatchAPI):
    kind = "anthropic"
    batches_path = "/messages/batches"
    schema_modes = ("json_schema", "tool")

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.anthropic.com/v1",
        api_key_env: str | None = None,
        schema_mode: AnthropicSchemaMode = "json_schema",
        timeout_s: float = 600.0,
    ) -> None:
        self.model = model
        self.api_key_env = api_key_env
        self.schema_mode: AnthropicSchemaMode = schema_mode
        headers = {"anthropic-version": API_VERSION}
        key = read_key(api_key_env, "ANTHROPIC_API_KEY")
        if key:
            headers["x-api-key"] = key
        super().__init__(base_url, headers, timeout_s)

    @property
    def access(self) -> dict[str, Any]:
        return {
            "provider": "anthropic-batch",
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
        }

    def params(self, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if self.shape.sends("temperature"):
            params["temperature"] = min(1.0, request.temperature)
        if system:
            params["system"] = system
        if request.json_schema is not None:
            if self.mode_for(request.schema_name) == "json_schema":
                params["output_config"] = {
                    "format": {"type": "json_schema", "schema": output_schema(request.json_schema)}
                }
            else:
                params["tools"] = [
                    {
                        "name": request.schema_name,
                        "description": "Give the reply as this tool's input.",
                        "input_schema": wire_schema(request.json_schema),
                    }
                ]
                params["tool_choice"] = {"type": "tool", "name": request.schema_name}
        return params

    def line(self, key: str, request: ChatRequest) -> bytes:
        return orjson.dumps({"custom_id": key, "params": self.params(request)}) + b"\n"

    async def create(
        self, job: Job, lines: list[bytes], on_file: Callable[[str], None], known: set[str]
    ) -> str:
        body = b'{"requests":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        headers = {"Content-Type": "application/json"}
        return await self.create_batch(job, known, "/messages/batches", data=body, headers=headers)

    async def find(self, job: Job, known: set[str]) -> str | None:
        """No metadata to match: the one batch created just after the job was staged with its
        number of requests, that no other job holds."""
        page = orjson.loads(await self.call("GET", "/messages/batches?limit=100"))
        found = [
            b["id"]
            for b in page.get("data", [])
            if b["id"] not in known
            and job.created - 5 <= timestamp(b.get("created_at")) <= job.created + 600
            and sum((b.get("request_counts") or {}).values()) == job.lines
        ]
        return found[0] if len(found) == 1 else None

    async def status(self, batch_id: str) -> Remote:
        batch = orjson.loads(await self.call("GET", f"/messages/batches/{batch_id}"))
        counts = batch.get("request_counts") or {}
        status = normal_status(batch.get("processing_status"))
        failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
        url = batch.get("results_url")
        archived = batch.get("archived_at")  # its results unavailable from then on (29 days)
        return Remote(
            status=status,
            terminal=status == "ended",
            cancelled=status == "canceling" or batch.get("cancel_initiated_at") is not None,
            done=int(counts.get("succeeded") or 0),
            failed=failed,
            sources=(url,) if url else (),
            gone=f"its results were archived at {archived}" if archived else None,
            unready="ended and no results URL" if status == "ended" and not url else None,
        )

    def parse(self, raw: bytes) -> LineResult:
        return parse_result(raw)


def parse_result(raw: bytes) -> LineResult:
    """One line of a Message Batch's results."""
    data = orjson.loads(raw)
    key = data.get("custom_id") or ""
    result = data.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        parts = []
        for block in message.get("content") or []:
            if block.get("type") == "text":
                parts.append(block.get("text") or "")
            elif block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input")).decode())
        usage = message.get("usage") or {}
        completion = Completion(
            "".join(parts),
            _STOP.get(message.get("stop_reason") or "", message.get("stop_reason")),
            int(usage.get("input_tokens") or 0),
            int(usage.get("output_tokens") or 0),
        )
        return LineResult(key, "ok", completion)
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or {}
        text = f"{error.get('type')}: {error.get('message')}"
        if error.get("type") == "invalid_request_error":
            refusal = read_refusal({"error": error})
            if refusal.kind == "param":
                return LineResult(key, "refused", error=text, refusal=refusal)
            lowered = str(error.get("message")).lower()
            schema = any(word in lowered for word in _SCHEMA_WORDS)
            return LineResult(key, "schema" if schema else "request", error=text)
        return LineResult(key, "server", error=text)
    return LineResult(key, "missing", error=f"the line was {kind}")
