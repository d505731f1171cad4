"""Tolerant JSON extraction from model replies, and schema validation.

Models wrap JSON in code fences or chat around it; we take the first JSON value that parses and
check it against the request's schema. Validators are compiled once per schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_decoder = json.JSONDecoder()
_validators: dict[bytes, Draft202012Validator] = {}


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


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = Draft202012Validator(schema)
    return validator


def parse_reply(text: str, schema: dict[str, Any]) -> Any:
    """Parse and validate; raise InvalidReply with a message fit to show the model in a re-ask."""
    value = extract_json(text)
    error = best_match(validator_for(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidReply(f"at {where}: {error.message[:300]}")
    return value
