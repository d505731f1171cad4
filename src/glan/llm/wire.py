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
