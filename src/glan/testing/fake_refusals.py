"""What today's hosted models refuse, as their providers word it, for the fake servers.

A reasoning model (OpenAI's o-series and gpt-5 family, Azure's deployments of them) refuses
`max_tokens` and `top_p` (400 `unsupported_parameter`) and any temperature but its default 1
(400 `unsupported_value`), and counts hidden reasoning tokens against `max_completion_tokens`.
OpenAI's strict structured output refuses a schema keyword it does not take ("'minLength' is
not permitted"), an object left open, or a key left optional. Newer Claude models refuse
`temperature` ("deprecated for this model"). The error objects are shaped as each provider's.
"""

from __future__ import annotations

from typing import Any

#: The keywords OpenAI's strict mode takes (its documented subset); any other is refused.
STRICT_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "anyOf", "$defs", "$ref", "description", "title", "pattern", "format", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
    }
)  # fmt: skip
#: Hidden reasoning a fake reasoning model spends before its visible reply, in tokens.
REASONING_TOKENS = 300


def _openai_error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def reasoning_model_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 error body an OpenAI reasoning model gives this chat body, or None."""
    if "max_tokens" in body:
        return _openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    if "top_p" in body:
        return _openai_error(
            "Unsupported parameter: 'top_p' is not supported with this model.",
            "top_p",
            "unsupported_parameter",
        )
    if body.get("temperature", 1) != 1:
        return _openai_error(
            f"Unsupported value: 'temperature' does not support {body['temperature']} with "
            "this model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    return None


def reasoning_spent(body: dict[str, Any], reply_tokens: int) -> tuple[int, bool]:
    """(reasoning tokens spent, whether the reply fits): the limit counts both."""
    limit = body.get("max_completion_tokens")
    spent = REASONING_TOKENS if limit is None else min(REASONING_TOKENS, int(limit))
    return spent, limit is None or spent + reply_tokens <= int(limit)


def strict_schema_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 OpenAI gives a strict json_schema it cannot hold to, or None."""
    fmt = body.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    if fmt.get("type") != "json_schema" or not spec.get("strict"):
        return None
    problem = _strict_problem(spec.get("schema") or {}, ())
    if problem is None:
        return None
    return _openai_error(
        f"Invalid schema for response_format '{spec.get('name')}': {problem}",
        "response_format",
        None,
    )


def _strict_problem(node: Any, where: tuple[str, ...]) -> str | None:
    if isinstance(node, list):
        for i, value in enumerate(node):
            if (found := _strict_problem(value, (*where, str(i)))) is not None:
                return found
        return None
    if not isinstance(node, dict):
        return None
    context = f"In context={where!r}"
    for key in node:
        if key not in STRICT_KEYWORDS and where[-1:] != ("properties",):
            return f"{context}, '{key}' is not permitted."
    if node.get("type") == "object":
        if node.get("additionalProperties") is not False:
            return f"{context}, 'additionalProperties' is required to be supplied and to be false."
        missing = set(node.get("properties") or {}) - set(node.get("required") or ())
        if missing:
            return (
                f"{context}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{sorted(missing)[0]}'."
            )
    for key, value in node.items():
        if key != "enum" and (found := _strict_problem(value, (*where, key))) is not None:
            return found
    return None


def lacks_json_schema_error() -> dict[str, Any]:
    """What a deployment whose model has no json_schema output says to one."""
    return _openai_error(
        "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
        "this model.",
        "response_format",
        None,
    )


def anthropic_refusal(params: dict[str, Any]) -> dict[str, Any] | None:
    """The `error` of a newer Claude model given these Messages API params, or None."""
    if "temperature" in params:
        message = "`temperature` is deprecated for this model."
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return None
