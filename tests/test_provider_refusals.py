"""Today's models refuse what older ones took; a run steps down by the provider's own 400 and
never loses a unit to it: OpenAI reasoning models (max_tokens, top_p, temperature), strict
structured output's keyword subset, a deployment without json_schema, Claude models refusing
temperature. Online and by batch."""

from __future__ import annotations

import orjson
import pytest

from glan.api import generate
from glan.llm import ChatRequest, LLMClient, RequestFailed, user
from glan.llm.openai_http import OpenAIBackend
from glan.llm.refusals import BodyShape, read_refusal
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.fake_refusals import (
    anthropic_refusal,
    lacks_json_schema_error,
    reasoning_model_refusal,
    strict_schema_refusal,
)
from glan.testing.fake_server import FakeServer
from glan.testing.runs import batch_config_for, config_for, read_jsonl

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "tags"],
}
CLOSED = {**SCHEMA, "additionalProperties": False}
STRICT_CLOSED = {"name": "x", "strict": True, "schema": CLOSED}
REASONING_BODY = {"model": "m", "messages": [], "max_tokens": 8, "top_p": 0.9, "temperature": 0.7}


def ask(text: str = "hello", **kw) -> ChatRequest:
    return ChatRequest(messages=user(text), max_tokens=64, **kw)


def manifest_of(run) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())


# ---- reading the provider's own error ------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "kind", "name"),
    [
        (reasoning_model_refusal(REASONING_BODY), "param", "max_tokens"),
        (reasoning_model_refusal({"temperature": 0.2}), "param", "temperature"),
        (reasoning_model_refusal({"top_p": 0.9}), "param", "top_p"),
        (anthropic_refusal({"temperature": 0.7}), "param", "temperature"),
        # A gateway that kept only the message.
        ({"error": "Unsupported parameter: 'max_tokens' is not supported"}, "param", "max_tokens"),
        (
            strict_schema_refusal(
                {"response_format": {"type": "json_schema", "json_schema": STRICT_CLOSED}}
            ),
            "keyword",
            "minLength",
        ),
        # Not the shape's to change: the structured-output step-down's, or the body's own.
        (lacks_json_schema_error(), "other", None),
        (
            {
                "error": {
                    "message": "no",
                    "param": "response_format",
                    "code": "unsupported_parameter",
                }
            },
            "other",
            None,
        ),
        (
            {"error": {"message": "max_tokens is too large: 99999.", "param": "max_tokens"}},
            "other",
            None,
        ),
        (
            {"error": {"message": "messages: too long", "code": "context_length_exceeded"}},
            "other",
            None,
        ),
    ],
)
def test_a_refusal_is_read_from_the_providers_own_error(error, kind, name):
    refusal = read_refusal(orjson.dumps(error))
    assert (refusal.kind, refusal.name) == (kind, name)


def test_the_endpoint_learns_once_and_bodies_built_before_go_again():
    shape = BodyShape(reasoning_headroom=100)
    refusal = read_refusal(reasoning_model_refusal(REASONING_BODY))
    assert shape.adapt(refusal, built_at=0)
    assert shape.apply({"max_tokens": 8, "top_p": 1}) == {"max_completion_tokens": 108, "top_p": 1}
    # Another body built before the change meets the same refusal: sent again, nothing new.
    assert shape.adapt(refusal, built_at=0) and len(shape.changes) == 1
    # Refused although built after the change: nothing left to change, the body's own fault.
    assert not shape.adapt(read_refusal(lacks_json_schema_error()), built_at=shape.version)


# ---- online ----------------------------------------------------------------------------------
def test_a_reasoning_model_online_makes_every_pair_and_says_what_changed(tmp_path):
    """max_tokens, top_p and temperature 0.7 refused: today 0 records. Each is learnt once
    from the provider's 400 and no unit is replaced for it."""
    with FakeServer(reasoning_model=True) as server:
        server.record_bodies = True
        result = generate(tmp_path / "run", 20, config_for(server))
        refused = server.by_status["400_refused"]
        last = server.seen_bodies[-1]
    assert result.instructions == 20
    manifest = manifest_of(tmp_path / "run")
    assert manifest["status"] == "complete"
    assert sum(manifest["failures"].values()) == 0
    changes = {(c["name"], c["now"]) for c in manifest["parameter_changes"]}
    assert changes == {
        ("max_tokens", "sent as max_completion_tokens"),
        ("top_p", "not sent (the model's default applies)"),
        ("temperature", "not sent (the model's default applies)"),
    }
    assert not {"max_tokens", "top_p", "temperature"} & set(last)
    assert last["max_completion_tokens"] > 8192  # the stage's limit and the headroom
    # Every concurrent body in flight meets each refusal at most once.
    assert refused <= 3 * 16


async def test_a_reasoning_models_limit_leaves_room_for_its_reasoning(tmp_path):
    """The model spends hidden reasoning out of max_completion_tokens: a limit sized for the
    reply alone comes back empty (and paid); the headroom keeps replies."""
    with FakeServer(reasoning_model=True) as server:
        for headroom, works in ((0, False), (8192, True)):
            backend = OpenAIBackend("m", server.base_url, reasoning_headroom=headroom)
            client = LLMClient(backend, max_reasks=1)
            try:
                if works:
                    assert (await client.chat(ask("short reply"))).text
                else:
                    with pytest.raises(RequestFailed, match="empty"):
                        await client.chat(ask("short reply"))
            finally:
                await client.aclose()


async def test_structured_output_is_strict_where_the_schema_allows(make_client, fake_server):
    """Closed objects and every key required: OpenAI's constrained decoding (strict)."""
    fake_server.record_bodies = True
    client = make_client()
    await client.chat(ask(json_schema=SCHEMA, schema_name="person"))
    sent = fake_server.seen_bodies[-1]["response_format"]
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == CLOSED
    optional = {**SCHEMA, "required": ["name"]}  # strict has no optional key: a hint only
    await client.chat(ask("b", json_schema=optional, schema_name="person"))
    assert "strict" not in fake_server.seen_bodies[-1]["response_format"]["json_schema"]


async def test_keywords_strict_mode_refuses_are_learnt_once_and_described():
    with FakeServer(strict_like_openai=True) as server:
        server.record_bodies = True
        client = LLMClient(OpenAIBackend("m", server.base_url))
        try:
            first = await client.chat(ask("one", json_schema=SCHEMA, schema_name="person"))
            refused = server.by_status["400_refused"]
            server.seen_bodies.clear()
            await client.chat(ask("two", json_schema=SCHEMA, schema_name="person"))
        finally:
            await client.aclose()
    assert set(first.parsed) == {"name", "tags"}
    assert refused == 2  # minLength, then maxLength: each named by the server, learnt once
    [body] = server.seen_bodies  # the second body went once, strict, its bounds described
    fmt = body["response_format"]["json_schema"]
    assert fmt["strict"] is True
    assert fmt["schema"]["properties"]["name"] == {
        "type": "string",
        "description": "(constraints: maxLength=40, minLength=2)",
    }
    keywords = [c["name"] for c in client.backend.parameter_changes()]
    assert keywords == ["minLength", "maxLength"]


# ---- batch -----------------------------------------------------------------------------------
def test_a_reasoning_model_by_batch_makes_every_pair_with_nothing_paid_twice(tmp_path):
    """Every line of the first batch refused: today each unit is replaced as a bad request
    and the run makes 0 pairs. Refused lines go again, built as the model takes them."""
    with FakeBatchServer(reasoning_model=True, strict_like_openai=True) as server:
        result = generate(tmp_path / "run", 100, batch_config_for(server))
        bodies = [body for b in server.batches.values() for _, body in b.lines]
    assert result.instructions == 100
    manifest = manifest_of(tmp_path / "run")
    assert manifest["status"] == "complete" and sum(manifest["failures"].values()) == 0
    assert server.paid_twice == 0 and max(server.answered.values()) == 1
    names = {c["name"] for c in manifest["parameter_changes"]}
    assert {"max_tokens", "top_p", "temperature"} <= names
    assert "max_completion_tokens" in bodies[-1] and "temperature" not in bodies[-1]


def test_a_deployment_without_json_schema_steps_each_schema_down_by_batch(tmp_path):
    with FakeBatchServer(lacks_json_schema=True) as server:
        result = generate(tmp_path / "run", 40, batch_config_for(server))
    assert result.instructions == 40
    manifest = manifest_of(tmp_path / "run")
    assert manifest["status"] == "complete"
    steps = {(c["schema"], c["to"]) for c in manifest["schema_downgrades"]}
    # strict and json_schema are both refused, so each schema ends at json_object.
    assert {to for _, to in steps} == {"json_schema", "json_object"}
    assert {name for name, _ in steps} >= {"subjects", "syllabus", "question"}
    assert server.paid_twice == 0


def test_a_claude_model_refusing_temperature_by_batch(tmp_path):
    with FakeBatchServer(refuse_temperature=True) as server:
        result = generate(tmp_path / "run", 40, batch_config_for(server, "anthropic-batch"))
        last = list(server.batches.values())[-1].lines[-1][1]
    assert result.instructions == 40
    manifest = manifest_of(tmp_path / "run")
    assert [c["name"] for c in manifest["parameter_changes"]] == ["temperature"]
    assert "temperature" not in last
    assert len(read_jsonl(tmp_path / "run" / "instructions.jsonl")) == 40
