"""What the fake batch servers say: batch objects, result lines and Messages API replies, in
OpenAI's and Anthropic's shapes (glan.testing.fake_batch serves them)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from glan.testing.fake_batch_faults import capitalised
from glan.testing.fake_replies import Replier


@dataclass
class FakeBatch:
    """One batch as the fake keeps it."""

    id: str
    shape: str  # openai | anthropic
    lines: list[tuple[str, dict[str, Any]]]  # custom_id, OpenAI-style chat body (or params)
    outcome: str
    created: float
    metadata: dict[str, Any]
    input_file_id: str | None = None
    status: str = "validating"
    polls: int = 0
    cancelled: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes = b""
    completed: int = 0
    failed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    tokens: tuple[int, int] = (0, 0)  # prompt and completion tokens of its replies
    enqueued: int = 0  # prompt tokens it holds of the enqueued-token quota while live
    lost: bool = False  # its results are gone for good
    archived: float | None = None  # when its results became unavailable (Anthropic)


def _stamp(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def openai_view(b: FakeBatch, azure_style: bool = False) -> dict[str, Any]:
    """The batch object; `azure_style`: created_at an ISO string and the status capitalised,
    as some Azure examples show them."""
    prompt, completion = b.tokens
    return {
        "id": b.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": {"object": "list", "data": b.errors} if b.errors else None,
        "input_file_id": b.input_file_id or "",
        "completion_window": "24h",
        "status": capitalised(b.status) if azure_style else b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": _stamp(b.created) if azure_style else int(b.created),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
        "request_counts": {
            "total": len(b.lines),
            "completed": b.completed,
            "failed": b.failed,
        },
        "metadata": b.metadata,
    }


def anthropic_view(b: FakeBatch, origin: str) -> dict[str, Any]:
    ended = b.status == "ended"
    processing = 0 if ended else len(b.lines)
    counts = {
        "processing": processing,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
        **(b.counts if ended else {}),
    }
    stamp = _stamp(b.created)
    return {
        "id": b.id,
        "type": "message_batch",
        "processing_status": b.status,
        "request_counts": counts,
        "created_at": stamp,
        "expires_at": stamp,
        "ended_at": stamp if ended else None,
        "archived_at": _stamp(b.archived),
        "cancel_initiated_at": stamp if b.cancelled else None,
        "results_url": f"{origin}/v1/messages/batches/{b.id}/results" if ended else None,
    }


def failed_line(b: FakeBatch, key: str, code: str) -> dict[str, Any]:
    if b.shape == "anthropic":
        if code in ("server_error", "output_format"):
            error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
            if code == "output_format":
                message = "output_config.format: this model does not support it"
                error["error"] = {"type": "invalid_request_error", "message": message}
            return {"custom_id": key, "result": {"type": "errored", "error": error}}
        kind = "expired" if code == "batch_expired" else "canceled"
        return {"custom_id": key, "result": {"type": kind}}
    if code == "server_error":
        body = {"error": {"message": "The server had an error", "type": "server_error"}}
        return {
            "id": f"req_{key[:8]}",
            "custom_id": key,
            "response": {"status_code": 500, "request_id": "r", "body": body},
            "error": None,
        }
    return {
        "id": f"req_{key[:8]}",
        "custom_id": key,
        "response": None,
        "error": {
            "code": code,
            "message": f"This request could not be executed "
            f"before the batch was {code.removeprefix('batch_')}.",
        },
    }


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The fake model's count of a prompt's tokens."""
    return sum(len(m["content"]) for m in messages) // 4 + 1


def enqueued_tokens(body: dict[str, Any]) -> int:
    """What a line holds of the enqueued-token quota: its input, the messages and the
    structured-output schema (about 4 bytes a token)."""
    schema = body.get("response_format") or body.get("tools") or {}
    return (len(orjson.dumps(body["messages"])) + len(orjson.dumps(schema))) // 4


def ok_tokens(lines: list[dict[str, Any]]) -> tuple[int, int]:
    """Prompt and completion tokens of successful result lines (either shape)."""
    prompt = completion = 0
    for line in lines:
        if "result" in line:
            usage = line["result"]["message"]["usage"]
            prompt, completion = prompt + usage["input_tokens"], completion + usage["output_tokens"]
        else:
            usage = line["response"]["body"]["usage"]
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
    return prompt, completion


def refused_line(b: FakeBatch, key: str, error: dict[str, Any]) -> dict[str, Any]:
    """A line the model refused with HTTP 400 and this error body (each provider's shape)."""
    if b.shape == "anthropic":
        return {"custom_id": key, "result": {"type": "errored", "error": error}}
    return {
        "id": f"req_{key[:8]}",
        "custom_id": key,
        "response": {"status_code": 400, "request_id": "r", "body": error},
        "error": None,
    }


def ok_line(b: FakeBatch, key: str, body: dict[str, Any], replier: Replier) -> dict[str, Any]:
    if b.shape == "anthropic":
        return {
            "custom_id": key,
            "result": {"type": "succeeded", "message": message(body, replier)},
        }
    content = replier(body)
    if not isinstance(content, str):
        content = orjson.dumps(content).decode()
    prompt = prompt_tokens(body["messages"])
    completion = {
        "id": f"chatcmpl-{key[:8]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt + len(content) // 4 + 1,
        },
    }
    return {
        "id": f"req_{key[:8]}",
        "custom_id": key,
        "response": {"status_code": 200, "request_id": "r", "body": completion},
        "error": None,
    }


def message(params: dict[str, Any], replier: Replier) -> dict[str, Any]:
    """A Messages API reply from the chat replier, for params in Anthropic's form."""
    messages = list(params["messages"])
    if params.get("system"):
        messages.insert(0, {"role": "system", "content": params["system"]})
    chat: dict[str, Any] = {"messages": messages, "seed": None}
    tools = params.get("tools") or []
    fmt = (params.get("output_config") or {}).get("format")
    schema = tools[0]["input_schema"] if tools else (fmt or {}).get("schema")
    if schema is not None:
        schema = described_bounds(schema)
        chat["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    content = replier(chat)
    if tools:
        block = {
            "type": "tool_use",
            "id": "toolu_fake",
            "name": tools[0]["name"],
            "input": content,
        }
        stop = "tool_use"
    else:
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        block, stop = {"type": "text", "text": text}, "end_turn"
    prompt = prompt_tokens(messages)
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": len(str(content)) // 4 + 1},
    }


def described_bounds(node: Any) -> Any:
    """A schema with the bounds its descriptions state put back: the fake model follows a
    described constraint as a real one follows its prompt (glan.llm.batch.anthropic_batch)."""
    if isinstance(node, list):
        return [described_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: described_bounds(v) for k, v in node.items()}
    found = re.search(r"\(constraints: ([^)]*)\)", str(node.get("description", "")))
    if found:
        for item in found.group(1).split(", "):
            key, _, value = item.partition("=")
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out
