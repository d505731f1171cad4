"""What the fake OpenAI-compatible servers answer: a schema-aware reply whose strings depend on
the prompt (different prompts, different replies), and the key that names one logical request
across its retries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

Replier = Callable[[dict[str, Any]], str | dict[str, Any] | list[Any] | None]


def request_key(body: dict[str, Any]) -> str:
    """Identifies one logical request (messages, sampling, seed) across retries."""
    return hashlib.sha256(
        orjson.dumps(
            [body.get("messages"), body.get("seed"), body.get("temperature")],
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:16]


def instance_from_schema(schema: dict[str, Any], seed: str, path: str = "") -> Any:
    """A value valid for a bounded JSON schema, varied by `seed` (prompt-dependent)."""
    if "enum" in schema:
        options = schema["enum"]
        return options[int(hashlib.md5((seed + path).encode()).hexdigest(), 16) % len(options)]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: instance_from_schema(v, seed, f"{path}.{k}") for k, v in props.items()}
    if kind == "array":
        low = schema.get("minItems", 1)
        high = schema.get("maxItems", low + 3)
        n = max(low, min(high, low + 2))
        return [
            instance_from_schema(schema.get("items", {}), seed, f"{path}[{i}]") for i in range(n)
        ]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    digest = hashlib.sha256((seed + path).encode()).hexdigest()[:10]
    label = path.strip(".").replace(".", " ").replace("[", " ").replace("]", "") or "text"
    text = f"{label} {digest}"
    low = schema.get("minLength", 0)
    if len(text) < low:
        text = text + " x" * low
    high = schema.get("maxLength")
    return text[:high] if high else text


def default_replier(body: dict[str, Any]) -> str | dict[str, Any] | list[Any]:
    fmt = body.get("response_format") or {}
    last = body["messages"][-1]["content"]
    seed = hashlib.sha256((last + str(body.get("seed"))).encode()).hexdigest()
    if fmt.get("type") == "json_schema":
        return instance_from_schema(fmt["json_schema"]["schema"], seed)
    if "JSON schema:\n" in last:  # a schema given in the prompt (json_object or prompt mode)
        schema = orjson.loads(last.rsplit("JSON schema:\n", 1)[1].strip())
        return instance_from_schema(schema, seed)
    return f"Reply {seed[:12]} to: {last[:80]}"


def fixed_completion(content: str) -> bytes:
    """One chat completion body, always the same (the benchmark server's fast path)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    return orjson.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "choices": [{**choice, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
        }
    )
