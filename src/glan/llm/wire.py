"""The JSON schema a request sends, as opposed to the one its reply is validated against.

`ChatRequest.json_schema` is the validation schema: checked client side after the reply
(`glan.llm.jsonreply`), so it may say anything JSON Schema can. What goes on the wire (an
OpenAI `response_format`, a llama.cpp `json_object` schema, a schema folded into the prompt, the
embedded backend's grammar) is compiled by the user's grammar engine, and those engines unroll
length bounds into rules: llama.cpp's GBNF parser refuses a long repetition ("exceeds sane
defaults"; `"maxLength": 2000` did) and llama-cpp-python's server then dies with a segmentation
fault.

`wire_schema` is the projection every backend sends: the same schema with large bounds removed.
Bounds up to the limits below are kept, because they are what makes a tiny model close its
strings and lists; larger ones are left to `max_tokens` and to validation after the reply. A
large bound is dropped, not lowered: lowering it would cut valid long replies short.

Measured (BENCHMARKS.md, "Grammar-safe schemas"): llama.cpp's converter and GBNF parser take
about 0.7 us per unit of a string bound (0.25 ms at 400, 0.7 ms at 1,000) and refuse 1,500;
xgrammar (vLLM) compiles every stage schema, and compiles the projection faster than the full
schema (syllabus: 4.8 s against 6.4 s on one thread with SmolLM2's 49k-token vocabulary; its
cost grows with the sum of the kept string bounds, once per schema per server).
"""

from __future__ import annotations

from typing import Any

import orjson

from glan.llm.memo import IdentityMemo

#: Largest minLength/maxLength sent: llama.cpp accepts 1,000 and refuses 1,500; 400 leaves a
#: margin for converters that nest a bounded string inside another repetition.
MAX_WIRE_LENGTH = 400
#: Largest minItems/maxItems sent: an array item is one rule, but may be a large one.
MAX_WIRE_ITEMS = 50

_LIMITS = {
    "minLength": MAX_WIRE_LENGTH,
    "maxLength": MAX_WIRE_LENGTH,
    "minItems": MAX_WIRE_ITEMS,
    "maxItems": MAX_WIRE_ITEMS,
}
_projected: dict[bytes, dict[str, Any]] = {}


def _project(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _project(value)
            for key, value in node.items()
            if not (key in _LIMITS and isinstance(value, int) and value > _LIMITS[key])
        }
    if isinstance(node, list):
        return [_project(value) for value in node]
    return node


def _projection(schema: dict[str, Any]) -> dict[str, Any]:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    projected = _projected.get(key)
    if projected is None:
        projected = _projected[key] = _project(schema)
    return projected


_projection_of = IdentityMemo(_projection)


def wire_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The grammar-safe projection of a validation schema (memoised: stage schemas repeat).

    The result is shared between callers: treat it as read-only.
    """
    return _projection_of(schema)


def described(node: Any, keywords: frozenset[str]) -> Any:
    """The schema without these keywords, each dropped bound written into its node's
    description, so a model that cannot be held to it still reads it (the reply is validated
    against the full schema afterwards, as always)."""
    if isinstance(node, list):
        return [described(value, keywords) for value in node]
    if not isinstance(node, dict):
        return node
    out = {k: described(v, keywords) for k, v in node.items() if k not in keywords}
    dropped = [f"{k}={node[k]}" for k in sorted(node) if k in keywords]
    if dropped:
        note = f"(constraints: {', '.join(dropped)})"
        out["description"] = f"{out['description']} {note}" if "description" in out else note
    return out


def closed(node: Any) -> Any:
    """The schema as strict structured-output modes (OpenAI's strict, Anthropic's) want it:
    every object closed to keys it does not list (`additionalProperties: false`), every enum of
    strings typed as one."""
    if isinstance(node, list):
        return [closed(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {k: v if k == "enum" else closed(v) for k, v in node.items()}
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
    enum = out.get("enum")
    if "type" not in out and enum and all(isinstance(v, str) for v in enum):
        out = {"type": "string", **out}
    return out


def qualifies_for_strict(node: Any) -> bool:
    """Whether strict decoding can hold a reply to this schema exactly: an object at the root,
    and every object lists its keys and requires them all (strict modes have no optional key)."""
    if not isinstance(node, dict) or node.get("type") != "object":
        return False
    return _all_required(node)


def _all_required(node: Any) -> bool:
    if isinstance(node, list):
        return all(_all_required(value) for value in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object" or "properties" in node:
        properties = node.get("properties")
        if not properties or set(node.get("required") or ()) != set(properties):
            return False
    return all(_all_required(value) for key, value in node.items() if key != "enum")


_strict_by_refusals: dict[frozenset[str], IdentityMemo[dict[str, Any] | None]] = {}


def strict_schema(
    schema: dict[str, Any], refused: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """What a strict structured-output request sends for this validation schema: the wire
    projection with every object closed and the keywords this endpoint's strict mode refused
    moved into descriptions; None when the schema cannot be strict (an optional key).

    The result is shared between callers: treat it as read-only."""
    memo = _strict_by_refusals.get(refused)
    if memo is None:

        def project(wire: dict[str, Any]) -> dict[str, Any] | None:
            return described(closed(wire), refused) if qualifies_for_strict(wire) else None

        memo = _strict_by_refusals[refused] = IdentityMemo(project)
    # wire_schema gives one shared object per distinct schema: the memo's key.
    return memo(wire_schema(schema))
