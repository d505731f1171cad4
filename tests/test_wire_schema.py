"""What is sent is a schema every grammar engine compiles; what is validated is the full one.

Every stage's schema goes, after projection, through llama.cpp's own converter and GBNF parser
(the one that crashed llama-cpp-python's server on `"maxLength": 2000`) and through xgrammar's
compiler (vLLM's structured outputs) when it is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import require
from glan.config import GenerateConfig
from glan.glantest import judge
from glan.llm import MAX_WIRE_ITEMS, MAX_WIRE_LENGTH, ChatRequest, RequestFailed, user, wire_schema
from glan.llm.local import resolve_model
from glan.llm.wire import strict_schema
from glan.stages import questions, subjects, syllabus, taxonomy_build
from glan.testing.fake_refusals import strict_schema_refusal

STAGE_SCHEMAS: dict[str, dict[str, Any]] = {
    "questions": questions.SCHEMA,
    "subjects(4)": subjects.schema(4),
    "subjects(50)": subjects.schema(50),
    "syllabus": syllabus.schema(GenerateConfig()),
    "taxonomy_build(12)": taxonomy_build.schema(12),
    "glantest judge": judge.SCHEMA,
}
#: What OpenAI's strict mode refuses of the stage schemas (it takes no string length bounds):
#: learnt from its 400s at run time (glan.llm.refusals), described in the schema's text.
OPENAI_STRICT_REFUSES = frozenset({"minLength", "maxLength"})
LONG = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 10, "maxLength": 2000}},
    "required": ["text"],
}


LIMITS = {
    "minLength": MAX_WIRE_LENGTH,
    "maxLength": MAX_WIRE_LENGTH,
    "minItems": MAX_WIRE_ITEMS,
    "maxItems": MAX_WIRE_ITEMS,
}


def bounds(schema: Any, path: str = "") -> Iterator[tuple[str, str, int]]:
    """Every length bound in a schema: (where, which, value)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in LIMITS:
                yield path, key, value
            else:
                yield from bounds(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from bounds(value, f"{path}/{i}")


def test_large_bounds_are_dropped_and_small_ones_kept():
    schema = {
        "type": "array",
        "minItems": 1,
        "maxItems": 500,
        "items": {"type": "string", "minLength": 2, "maxLength": 2000},
    }
    assert wire_schema(schema) == {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "minLength": 2},
    }
    assert schema["items"]["maxLength"] == 2000  # the validation schema is untouched
    small = {"type": "string", "maxLength": MAX_WIRE_LENGTH}
    assert wire_schema(small) == small


@pytest.mark.parametrize("name", STAGE_SCHEMAS)
def test_stage_schemas_send_exactly_their_bounds_within_the_limits(name):
    full = STAGE_SCHEMAS[name]
    within = {(path, key, value) for path, key, value in bounds(full) if value <= LIMITS[key]}
    # Nothing over the limits goes on the wire, and every small bound (what keeps a tiny model
    # from looping: a question's minLength, a name's maxLength) is sent where it stood.
    assert set(bounds(wire_schema(full))) == within
    assert within, f"the {name} schema has no bound a grammar could keep"


async def test_the_openai_backend_sends_the_projection_and_validates_the_full_schema(
    make_client, fake_server
):
    fake_server.record_bodies = True
    fake_server.replier = lambda body: {"text": "x" * 2500}  # valid on the wire, too long
    with pytest.raises(RequestFailed, match="no usable reply"):
        await make_client().chat(ChatRequest(messages=user("long"), json_schema=LONG))
    sent = fake_server.seen_bodies[0]["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["text"] == {"type": "string", "minLength": 10}
    assert "must be shorter" in fake_server.seen_bodies[-1]["messages"][-1]["content"]


@pytest.fixture(scope="module")
def llama_vocab() -> Any:
    """The packaged SmolLM2's vocabulary (no weights): what llama.cpp's grammar parser needs."""
    llama_cpp = require("llama_cpp", "llama-cpp-python, in glan[test]")
    model = llama_cpp.Llama(model_path=str(resolve_model(None)), vocab_only=True, verbose=False)
    yield llama_cpp, model
    model.close()


def llama_cpp_compiles(llama_vocab: Any, schema: dict[str, Any]) -> bool:
    """Convert with llama.cpp's converter, parse with its GBNF parser: accepted?
    (How long that takes is measured by bench/grammar_bounds.py, not asserted here.)"""
    llama_cpp, model = llama_vocab
    gbnf = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    return bool(sampler)


@pytest.mark.parametrize("name", STAGE_SCHEMAS)
def test_every_stage_schema_qualifies_for_strict_decoding(name):
    """Every key required, every object closed: sent `strict` (OpenAI's constrained decoding),
    and once the length bounds OpenAI refuses there are described, it takes the schema."""
    strict = strict_schema(STAGE_SCHEMAS[name], OPENAI_STRICT_REFUSES)
    assert strict is not None
    body = {"response_format": {"type": "json_schema", "json_schema": {"strict": True}}}
    body["response_format"]["json_schema"]["schema"] = strict
    assert strict_schema_refusal(body) is None
    # The bounds are still there for the model to read.
    assert ("maxLength" in str(STAGE_SCHEMAS[name])) == ("maxLength=" in str(strict))


@pytest.mark.parametrize("name", STAGE_SCHEMAS)
@pytest.mark.parametrize("projection", ["wire", "strict"])
def test_stage_schemas_compile_in_llama_cpp(llama_vocab, name, projection):
    """The embedded backend's grammar (wire) and what a llama.cpp server gets by default
    (strict: it ignores the flag and compiles the closed schema, bounds included)."""
    schema = STAGE_SCHEMAS[name]
    sent = wire_schema(schema) if projection == "wire" else strict_schema(schema)
    assert llama_cpp_compiles(llama_vocab, sent)


def test_llama_cpp_refuses_the_unprojected_long_bound(llama_vocab):
    """Why the projection exists: this is the grammar that crashed llama-cpp-python's server."""
    assert not llama_cpp_compiles(llama_vocab, LONG)
    assert llama_cpp_compiles(llama_vocab, wire_schema(LONG))


@pytest.fixture(scope="module")
def xgrammar_compiler(llama_vocab: Any) -> Any:
    """xgrammar's compiler (vLLM's structured outputs) over the same vocabulary."""
    xgrammar = require("xgrammar", "scripts/test installs it after torch and transformers")
    _, model = llama_vocab
    vocab = [model.detokenize([token], special=True) for token in range(model.n_vocab())]
    return xgrammar.GrammarCompiler(
        xgrammar.TokenizerInfo(vocab), max_threads=1, cache_enabled=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", STAGE_SCHEMAS)
def test_stage_schemas_compile_in_xgrammar(xgrammar_compiler, name):
    """What a vLLM server gets by default (strict: it compiles the closed schema, bounds
    included) compiles (raises otherwise). Seconds per schema: bench/grammar_bounds.py."""
    sent = strict_schema(STAGE_SCHEMAS[name])
    compiled = xgrammar_compiler.compile_json_schema(json.dumps(sent))
    assert compiled.grammar is not None


def test_identity_memo_computes_once_per_object_and_stays_bounded():
    from glan.llm.memo import IdentityMemo

    calls = []
    memo = IdentityMemo(lambda d: calls.append(1) or sorted(d), limit=4)
    schema = {"b": 1, "a": 2}
    assert memo(schema) == ["a", "b"] and memo(schema) == ["a", "b"]
    assert len(calls) == 1
    for i in range(100):  # a fresh dict per call (as validated requests carry) is computed anew
        assert memo({f"k{i}": i}) == [f"k{i}"]
    assert len(calls) == 101 and len(memo._table) <= 4
    assert memo(schema) == ["a", "b"]  # the long-lived object comes back after a clear
