"""Tolerant JSON extraction from model replies, and schema validation.

Models wrap JSON in code fences or chat around it; we take the first JSON value that parses and
check it against the request's schema. Validators are compiled once per schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import fastjsonschema
import orjson

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# strict=False admits raw control characters inside strings: llama.cpp's JSON grammar lets
# small models emit newlines there, and the value is still what the model meant.
_decoder = json.JSONDecoder(strict=False)
_validators: dict[bytes, Any] = {}


class InvalidReply(ValueError):
    """The reply holds no JSON value, or one that breaks the schema."""


def extract_json(text: str) -> Any:
    """Return the first JSON value in `text`, tolerating fences and surrounding prose."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in candidates:
        for i, ch in enumerate(chunk):
            if ch in "{[":
                try:
                    value, _ = _decoder.raw_decode(chunk, i)
                    return value
                except json.JSONDecodeError:
                    continue
    raise InvalidReply("the reply contains no parseable JSON")


def validator_for(schema: dict[str, Any]) -> Any:
    """A compiled validator (fastjsonschema: ~1 µs for a small reply, 80x jsonschema's time)."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = fastjsonschema.compile(schema)
    return validator


def parse_reply(text: str, schema: dict[str, Any]) -> Any:
    """Parse and validate; raise InvalidReply with a message fit to show the model in a re-ask."""
    value = extract_json(text)
    try:
        validator_for(schema)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidReply(f"the JSON does not match the schema: {exc.message[:300]}") from None
    return value
