"""What length bounds cost grammar engines: the measurements behind glan.llm.wire's limits.

1. llama.cpp (llama-cpp-python's converter, then llama.cpp's own GBNF parser, as its server
   does for `response_format: json_object` + schema): parse time, and acceptance, of one string
   property as its maxLength grows, and of an array as its maxItems grows.
2. xgrammar (vLLM's structured outputs), when installed: compile time of every stage schema,
   full and as sent (`wire_schema`), over SmolLM2's 49k-token vocabulary, one thread.

Usage: python bench/grammar_bounds.py
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import llama_cpp

from glan.config import GenerateConfig
from glan.llm import wire_schema
from glan.llm.local import resolve_model
from glan.stages import questions, subjects, syllabus, taxonomy_build


def llama_cpp_parse(vocab: Any, schema: dict[str, Any]) -> tuple[bool, float]:
    gbnf = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    times, accepted = [], False
    for _ in range(5):
        started = time.perf_counter()
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        times.append(time.perf_counter() - started)
        accepted = bool(sampler)
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
    return accepted, statistics.median(times)


def smollm2_vocab() -> tuple[Any, Any]:
    """The packaged SmolLM2's vocabulary, and its model (which must outlive the vocabulary)."""
    model = llama_cpp.Llama(model_path=str(resolve_model(None)), vocab_only=True, verbose=False)
    return llama_cpp.llama_model_get_vocab(model.model), model


def string_bound(n: int) -> dict[str, Any]:
    string = {"type": "string", "minLength": 10, "maxLength": n}
    return {"type": "object", "properties": {"q": string}, "required": ["q"]}


def array_bound(n: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "maxLength": 80}, "maxItems": n}


def main() -> None:
    vocab, model = smollm2_vocab()
    print("| bound | llama.cpp accepts | parse time |\n|---|---|---:|")
    for n in (50, 100, 200, 400, 800, 1000, 1500, 2000):
        ok, seconds = llama_cpp_parse(vocab, string_bound(n))
        print(f"| maxLength {n} | {'yes' if ok else 'no'} | {seconds * 1000:.2f} ms |")
    for n in (10, 50, 100, 500):
        ok, seconds = llama_cpp_parse(vocab, array_bound(n))
        print(
            f"| maxItems {n} (items maxLength 80) | {'yes' if ok else 'no'} | {seconds * 1000:.2f} ms |"
        )
    try:
        import xgrammar
    except ImportError as exc:
        print(f"xgrammar not measured: {exc}")
        return
    tokens = [model.detokenize([t], special=True) for t in range(model.n_vocab())]
    compiler = xgrammar.GrammarCompiler(
        xgrammar.TokenizerInfo(tokens), max_threads=1, cache_enabled=False
    )
    stage_schemas = {
        "questions": questions.SCHEMA,
        "subjects(15)": subjects.schema(15),
        "syllabus": syllabus.schema(GenerateConfig()),
        "taxonomy_build(12)": taxonomy_build.schema(12),
    }
    print("\n| schema | xgrammar, full | xgrammar, as sent |\n|---|---:|---:|")
    for name, schema in stage_schemas.items():
        row = []
        for variant in (schema, wire_schema(schema)):
            started = time.perf_counter()
            compiler.compile_json_schema(json.dumps(variant))
            row.append(f"{time.perf_counter() - started:.2f} s")
        print(f"| {name} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
