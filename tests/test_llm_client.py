"""The OpenAI-compatible backend through the client: replies, faults, cache and fallbacks."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest

from glan.llm import ChatRequest, EndpointDown, EndpointFatal, RequestFailed, user
from glan.llm.openai_http import OpenAIBackend
from glan.testing.fake_server import FakeServer, default_replier

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "tags"],
}


def ask(text: str = "hello", **kw) -> ChatRequest:
    return ChatRequest(messages=user(text), max_tokens=64, **kw)


async def test_plain_reply_counts_tokens(make_client):
    client = make_client()
    reply = await client.chat(ask("say hi"))
    assert "say hi" in reply.text
    assert reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert client.usage.total().requests == 1


async def test_schema_reply_is_parsed_and_validated(make_client, fake_server):
    fake_server.record_bodies = True
    reply = await make_client().chat(ask(json_schema=SCHEMA))
    assert set(reply.parsed) == {"name", "tags"}
    sent = fake_server.seen_bodies[-1]["response_format"]
    # Sent strict (closed objects): the full schema is what the reply is validated against.
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == {**SCHEMA, "additionalProperties": False}


async def test_json_in_code_fence_with_prose_is_accepted(make_client, fake_server):
    fake_server.replier = lambda body: 'Sure!\n```json\n{"name": "x", "tags": []}\n```\nDone.'
    reply = await make_client().chat(ask(json_schema=SCHEMA))
    assert reply.parsed == {"name": "x", "tags": []}


@pytest.mark.parametrize("fault", ["schema_invalid", "malformed", "length", "empty"])
async def test_unusable_reply_is_reasked_with_the_error(make_client, fake_server, fault):
    fake_server.record_bodies = True
    fake_server.enqueue(fault)
    reply = await make_client().chat(ask(json_schema=SCHEMA))
    assert reply.reasks == 1 and set(reply.parsed) == {"name", "tags"}
    reask = fake_server.seen_bodies[-1]["messages"]
    assert reask[-2]["role"] == "assistant"
    assert "could not be used" in reask[-1]["content"]


async def test_reasks_are_bounded(make_client, fake_server):
    fake_server.enqueue("schema_invalid", "schema_invalid", "schema_invalid", "schema_invalid")
    client = make_client()
    with pytest.raises(RequestFailed, match="no usable reply"):
        await client.chat(ask(json_schema=SCHEMA))
    assert fake_server.requests == 3  # first try + max_reasks (2)
    assert client.usage.total().failed == 1


@pytest.mark.parametrize("fault", ["500", "503", "reset", "garbage", "timeout"])
async def test_transient_faults_are_retried(make_client, fake_server, fault):
    fake_server.timeout_sleep_s = 1.0
    fake_server.enqueue(fault, fault)
    client = make_client(timeout_s=0.3)
    reply = await client.chat(ask("retry me"))
    assert "retry me" in reply.text
    assert client.stats.retries == 2


async def test_first_429_of_a_burst_cuts_concurrency_once(make_client, fake_server):
    fake_server.enqueue(*["429"] * 6)
    fake_server.latency_s = 0.2  # all 16 are in flight before the first 429 comes back
    # The pause outlasts the burst, so every retry is admitted after the cut.
    client = make_client(concurrency=16, default_retry_after_s=0.5)
    replies = await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(16)))
    assert len(replies) == 16
    assert client.stats.rate_limited == 6
    assert client.stats.cuts == 1
    assert client.admission.limiter.limit in (8, 9)  # halved once; +1 after the next 8 successes
    assert client.stats.retries == 0  # 429s are not transport retries


async def test_retry_after_pauses_admission(make_client, fake_server):
    fake_server.enqueue("429_retry_after")
    client = make_client()
    started = time.monotonic()
    await client.chat(ask())
    assert time.monotonic() - started >= 0.2


async def test_concurrency_climbs_back_after_a_cut(make_client):
    client = make_client(concurrency=8)
    client.admission.limiter.on_rate_limited(client.admission.limiter.epoch, 0.0)
    assert client.admission.limiter.limit == 4
    for _ in range(4 + 5):
        client.admission.limiter.on_success()
    assert client.admission.limiter.limit == 6


async def test_cached_request_is_never_sent_again(make_client, fake_server, tmp_path):
    client = make_client()
    first = await client.chat(ask("once"))
    await client.aclose()  # as at the end of a run
    again = await make_client().chat(ask("once"))  # a new client on the same cache file
    assert again.cached and again.text == first.text
    assert fake_server.requests == 1


async def test_sample_index_makes_distinct_requests_and_seeds(make_client, fake_server):
    fake_server.record_bodies = True
    client = make_client()
    a = await client.chat(ask("same", sample_index=0, temperature=1.0))
    b = await client.chat(ask("same", sample_index=1, temperature=1.0))
    assert fake_server.requests == 2 and a.text != b.text
    seeds = {body["seed"] for body in fake_server.seen_bodies}
    assert len(seeds) == 2


def test_seed_sent_derives_from_run_seed_and_sample_index():
    seeds = {ask(seed=s, sample_index=i).effective_seed for s in range(4) for i in range(4)}
    assert len(seeds) == 16  # every (run seed, sample) pair is sampled differently
    assert all(0 <= seed < 2**31 for seed in seeds)  # fits the servers' 32-bit signed seed


async def test_seed_sent_is_the_effective_seed(make_client, fake_server):
    fake_server.record_bodies = True
    await make_client().chat(ask("seeded", seed=7, sample_index=2))
    assert fake_server.seen_bodies[-1]["seed"] == ask(seed=7, sample_index=2).effective_seed


@pytest.mark.parametrize(
    ("reject", "expected_mode"), [("json_schema", "json_object"), ("both", "prompt")]
)
async def test_structured_output_falls_back(make_client, fake_server, reject, expected_mode):
    """A server that lacks a mode refuses a minimal probe too: the endpoint steps down for
    good, and the refused body itself was still answered and parsed."""
    fake_server.reject_response_format = reject
    fake_server.record_bodies = True
    client = make_client()
    reply = await client.chat(ask("first body", json_schema=SCHEMA))
    assert set(reply.parsed) == {"name", "tags"}
    assert client.backend.mode_for(SCHEMA) == expected_mode
    fake_server.seen_bodies.clear()
    await client.chat(ask("second body", json_schema=SCHEMA))
    [only] = fake_server.seen_bodies  # sent once, at the mode the endpoint stepped down to
    assert "JSON schema" in only["messages"][-1]["content"]
    if expected_mode == "json_object":  # llama.cpp servers constrain to the schema given here
        assert only["response_format"] == {"type": "json_object", "schema": SCHEMA}
    else:
        assert "response_format" not in only
    changes = client.backend.structured_output_changes()
    assert [(c["scope"], c["to"]) for c in changes][-1] == ("endpoint", expected_mode)
    assert all("minimal probe too" in c["why"] for c in changes)


OTHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


async def test_one_body_that_breaks_the_grammar_keeps_structured_output_for_the_rest(
    make_client, fake_server
):
    """The body that crashes the grammar engine is answered alone without the constraint; a
    minimal probe passes, so the endpoint keeps its mode for other bodies and schemas."""
    fake_server.grammar_crash_when = lambda body: "poison" in body["messages"][-1]["content"]
    fake_server.record_bodies = True
    client = make_client()
    crashed = await client.chat(ask("poison pill", json_schema=SCHEMA, schema_name="person"))
    assert set(crashed.parsed) == {"name", "tags"}
    # It crashed strict, at json_schema and at json_object (schema given), then went without.
    assert fake_server.by_status["grammar_crash"] == 3
    fake_server.seen_bodies.clear()
    await client.chat(ask("an ordinary body", json_schema=SCHEMA))
    await client.chat(ask("another stage's body", json_schema=OTHER_SCHEMA))
    assert [b["response_format"]["type"] for b in fake_server.seen_bodies] == [
        "json_schema",
        "json_schema",
    ]
    assert client.backend.mode_for(SCHEMA) == "strict"
    changes = client.backend.structured_output_changes()
    assert [(c["scope"], c["schema"], c["from"], c["requests"]) for c in changes] == [
        ("request", "person", "strict", 1),
        ("request", "person", "json_schema", 1),
        ("request", "person", "json_object", 1),
    ]


async def test_a_body_and_its_reasks_never_step_the_endpoint_down(make_client, fake_server):
    """The body breaking the grammar, answered without it, needs a re-ask (its reply did not
    parse); the re-ask breaks the grammar too. Still one body's problem: no step down."""
    fake_server.grammar_crash_when = lambda body: "POISON" in body["messages"][0]["content"]
    first_reply = []

    def replier(body):
        if "POISON" in body["messages"][0]["content"] and not first_reply:
            first_reply.append(1)
            return "not json"
        return default_replier(body)

    fake_server.replier = replier
    client = make_client()
    reply = await client.chat(ask("POISON body", json_schema=SCHEMA))
    assert reply.reasks == 1
    assert client.backend.mode_for(SCHEMA) == "strict"
    assert all(c["scope"] == "request" for c in client.backend.structured_output_changes())


async def test_a_schema_the_grammar_cannot_compile_leaves_other_schemas_their_mode(
    make_client, fake_server
):
    def has_name_field(body) -> bool:  # the grammar engine cannot compile SCHEMA
        fmt = body.get("response_format") or {}
        return "name" in str(fmt.get("json_schema", {}).get("schema") or fmt.get("schema"))

    fake_server.grammar_crash_when = has_name_field
    fake_server.record_bodies = True
    client = make_client()
    for text in ("one", "two", "three"):
        reply = await client.chat(ask(text, json_schema=SCHEMA, schema_name="person"))
        assert set(reply.parsed) == {"name", "tags"}
    fake_server.seen_bodies.clear()
    await client.chat(ask("a city", json_schema=OTHER_SCHEMA, schema_name="city"))
    assert fake_server.seen_bodies[0]["response_format"]["type"] == "json_schema"
    changes = client.backend.structured_output_changes()
    assert [(c["scope"], c["schema"], c["from"], c["requests"]) for c in changes] == [
        ("request", "person", "strict", 3),
        ("request", "person", "json_schema", 3),
        ("request", "person", "json_object", 3),
    ]


async def test_endpoint_that_never_recovers_opens_the_breaker(make_client, fake_server):
    fake_server.fault_rates = {"500": 1.0}
    client = make_client(concurrency=4, max_retries=50)
    with pytest.raises(EndpointDown, match="failed 8 times in a row"):
        await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(8)))
    # Stopped at the 8th failure, not after 50 retries of each: only the (at most 3) other
    # requests already in flight could fail after it.
    assert fake_server.by_status["500"] <= 8 + 3


async def test_wrong_key_is_fatal(make_client, fake_server, monkeypatch):
    fake_server.api_key = "right"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(EndpointFatal, match="refused the API key"):
        await make_client().chat(ask())


async def test_unknown_model_is_fatal(make_client, fake_server):
    fake_server.models = ["real-model"]
    with pytest.raises(EndpointFatal, match="not found"):
        await make_client(model="no-such-model").chat(ask())


async def test_unreachable_url_is_fatal_at_once():
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(EndpointFatal, match="cannot reach"):
        await backend.preflight()
    await backend.aclose()


def test_missing_key_variable_is_fatal(monkeypatch):
    monkeypatch.delenv("GLAN_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(EndpointFatal, match="GLAN_TEST_NO_SUCH_KEY"):
        OpenAIBackend(model="m", base_url="http://x/v1", api_key_env="GLAN_TEST_NO_SUCH_KEY")


def test_invalid_url_is_fatal():
    with pytest.raises(EndpointFatal, match="invalid base URL"):
        OpenAIBackend(model="m", base_url="localhost:8000")


async def test_api_key_never_reaches_the_cache(make_client, fake_server, monkeypatch, tmp_path):
    marker = "sk-MARKER-7f3a9c"
    fake_server.api_key = marker
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    client = make_client()
    await client.chat(ask("secret test"))
    await client.aclose()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_fake_server_rejects_unknown_faults():
    with pytest.raises(ValueError):
        FakeServer(fault_rates={"meteor": 0.1})


async def test_empty_free_text_reply_is_reasked(make_client, fake_server):
    fake_server.enqueue("empty")
    fake_server.record_bodies = True
    reply = await make_client().chat(ask("answer me"))
    assert reply.reasks == 1 and reply.text.strip()
    reask = fake_server.seen_bodies[-1]["messages"]
    assert reask[0]["content"] == "answer me" and "was empty" in reask[-1]["content"]


async def test_length_cut_free_text_is_kept_and_marked(make_client, fake_server):
    fake_server.enqueue("length")
    reply = await make_client().chat(ask("a long answer please"))
    assert reply.finish_reason == "length" and reply.text


def test_cache_keys_never_change_between_versions():
    """A changed key would make every user's cache miss: they would pay for every reply again."""
    schema = {"type": "object", "properties": {"q": {"type": "string", "maxLength": 2000}}}
    request = ChatRequest(
        messages=user("What is entropy?", system="Be brief."),
        temperature=0.5,
        top_p=0.9,
        max_tokens=300,
        seed=7,
        sample_index=3,
        json_schema={**schema, "required": ["q"]},
    )
    for _ in range(2):  # the second reads the schema's memoised JSON
        assert request.cache_key("openai|http://127.0.0.1:8000/v1|m") == (
            "62e9d7e6428ced12b25aeee23bb63c9216ddcb690205d8b16e44e63fd2d0db6b"
        )
    assert ChatRequest(messages=user("Hello"), seed=1).cache_key("local|smollm2") == (
        "b7933fa84be01632f87f428570cf93c1c1b4533d1da77f4d177476f288be7b94"
    )


def test_hot_path_builders_make_the_requests_validation_would():
    """The question and answer builders skip pydantic's validation for speed: what they build
    must send and hash exactly as a validated request (1 and 1.0 compare equal, hash apart)."""
    from glan.config import GenerateConfig
    from glan.records import Syllabus
    from glan.stages import answers, questions

    cfg = GenerateConfig.model_validate(
        {
            "llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
            "stages": {"questions": {"temperature": 1, "max_tokens": 300}},
        }
    ).adapted()
    syllabus = Syllabus.model_validate(
        {
            "field": "Science",
            "subfield": "Physics",
            "discipline": "Optics",
            "subject": "Lenses",
            "level": "introductory",
            "sessions": [
                {"title": f"Session {i}", "concepts": ["focus", "image"]} for i in range(3)
            ],
        }
    )
    plan = questions.plan_questions(syllabus, 1, 0.5, random.Random(0))[0]
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    for built in (questions.build(syllabus, plan, cfg), answers.build("Why?", cfg)):
        validated = ChatRequest.model_validate(built.model_dump())
        assert built.cache_key("e") == validated.cache_key("e")
        sent, expected = backend._body(built), backend._body(validated)
        assert orjson.dumps(sent) == orjson.dumps(expected)  # 1 and 1.0 serialise apart
