"""Batch APIs (OpenAI/Azure, Anthropic) against the fake batch servers: every outcome handled,
re-attached after any crash, never paid twice."""

from __future__ import annotations

import asyncio
import signal
import typing

import orjson
import pytest
from pydantic import TypeAdapter

from glan.errors import UserError
from glan.llm import LLMClient, RequestFailed
from glan.llm.batch.anthropic_batch import AnthropicBatchAPI
from glan.llm.batch.ledger import BatchLedger
from glan.llm.batch.manage import cancel_live
from glan.llm.batch.openai_batch import OpenAIBatchAPI
from glan.llm.batch.options import BatchOptions
from glan.llm.settings import OpenAIBatchSettings, create_backend
from glan.testing.batch_clients import (
    KINDS,
    ask_all,
    assert_valid_records,
    client_for,
    generate_command,
    glan,
    requests,
)
from glan.testing.die_at import run_dying_at
from glan.testing.runs import FAST_BATCH


# ---- the wire formats, checked with the official SDKs ---------------------------------------
def unknown_keys(kind: typing.Any, value: typing.Any, path: str = "") -> list[str]:
    """Keys of `value` that the SDK's TypedDict `kind` does not name (pydantic lets extra
    keys through a TypedDict; a misspelt field would otherwise pass)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = [unknown_keys(k, value, path) for k in typing.get_args(kind)]
        return min(options, key=len) if options else []
    if origin is not None and origin.__name__ in ("Required", "NotRequired", "Annotated"):
        return unknown_keys(typing.get_args(kind)[0], value, path)
    if origin is not None and isinstance(value, list):
        args = typing.get_args(kind)
        return [k for v in value for k in unknown_keys(args[0], v, path + "[]")] if args else []
    if typing.is_typeddict(kind) and isinstance(value, dict):
        hints = typing.get_type_hints(kind, include_extras=True)
        out = [f"{path}.{k}" for k in value if k not in hints]
        for k, v in value.items():
            if k in hints:
                out += unknown_keys(hints[k], v, f"{path}.{k}")
        return out
    return []


def test_openai_lines_and_fake_speak_the_openai_sdk(batch_server, tmp_path):
    import openai
    from openai.types.chat import ChatCompletion
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

    api = OpenAIBatchAPI("fake-model", batch_server.base_url)
    lines = [api.line(f"id-{i}", r) for i, r in enumerate(requests(3))]
    for raw in lines:
        line = orjson.loads(raw)
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        TypeAdapter(CompletionCreateParamsNonStreaming).validate_python(line["body"])
        assert unknown_keys(CompletionCreateParamsNonStreaming, line["body"]) == []
    sdk = openai.OpenAI(base_url=batch_server.base_url, api_key="unused", max_retries=0)
    uploaded = sdk.files.create(file=("in.jsonl", b"".join(lines)), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(10):
        batch = sdk.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
    assert batch.status == "completed" and batch.request_counts.completed == 3
    output = sdk.files.content(batch.output_file_id).content
    parsed = {}
    for raw in output.splitlines():
        ChatCompletion.model_validate(orjson.loads(raw)["response"]["body"])
        result = api.parse(raw)
        parsed[result.custom_id] = result
    assert sorted(parsed) == ["id-0", "id-1", "id-2"]
    assert all(r.kind == "ok" and '"answer"' in r.completion.text for r in parsed.values())


def test_anthropic_lines_and_fake_speak_the_anthropic_sdk(batch_server):
    import anthropic
    from anthropic.types.messages import MessageBatchIndividualResponse
    from anthropic.types.messages.batch_create_params import Request

    api = AnthropicBatchAPI("fake-claude", batch_server.base_url)
    tool_api = AnthropicBatchAPI("fake-claude", batch_server.base_url, schema_mode="tool")
    lines = [api.line("a", requests(1)[0]), tool_api.line("b", requests(2)[1])]
    lines.append(api.line("c", requests(1, schema=False)[0]))
    bodies = [orjson.loads(raw) for raw in lines]
    for body in bodies:
        TypeAdapter(Request).validate_python(body)
        assert unknown_keys(Request, body) == []
    assert bodies[0]["params"]["system"] == "be brief"  # the system turn apart
    assert [m["role"] for m in bodies[0]["params"]["messages"]] == ["user"]
    assert bodies[0]["params"]["output_config"]["format"]["type"] == "json_schema"
    assert bodies[1]["params"]["tool_choice"] == {"type": "tool", "name": "reply"}
    sdk = anthropic.Anthropic(base_url=batch_server.base_url.removesuffix("/v1"), api_key="x")
    batch = sdk.messages.batches.create(requests=bodies)
    for _ in range(10):
        batch = sdk.messages.batches.retrieve(batch.id)
        if batch.processing_status == "ended":
            break
    assert batch.request_counts.succeeded == 3
    seen = {}
    for response in sdk.messages.batches.results(batch.id):
        assert isinstance(response, MessageBatchIndividualResponse)
        result = api.parse(response.model_dump_json().encode())
        seen[result.custom_id] = result
    assert {k: r.kind for k, r in seen.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    for key in ("a", "b"):
        assert "answer" in orjson.loads(seen[key].completion.text)  # text and tool replies


# ---- every outcome -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_failed_expired_and_all_failed_batches_are_sent_again(batch_server, tmp_path, kind):
    batch_server.line_failure_rate = 0.2
    batch_server.enqueue("expire", "all_failed")
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite", max_rounds=10)
    replies = asyncio.run(ask_all(client, requests(40)))
    assert all(r.parsed["answer"] for r in replies)
    first, second = list(batch_server.batches.values())[:2]
    assert (first.status, first.outcome) in (("expired", "expire"), ("ended", "expire"))
    assert second.output_file_id is None and second.completed == 0  # "completed", no output
    assert batch_server.paid_twice == 0
    assert max(batch_server.answered.values()) == 1


def test_a_line_failing_every_round_alike_is_given_up_for_its_own_sake(batch_server, tmp_path):
    """The same HTTP 500 for this line every round, while its batch served the others: the
    line breaks the model, as online; it is given up and its unit replaced."""
    batch_server.poisoned_when = lambda body: "question 1" in str(body["messages"])
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=2)
    first, poisoned, third = asyncio.run(ask_all(client, requests(3)))
    assert first.parsed and third.parsed
    assert isinstance(poisoned, RequestFailed) and poisoned.permanent
    assert "2 batch rounds" in str(poisoned)
    assert batch_server.lines_submitted == 4


def test_a_batch_failing_whole_every_round_is_the_providers_incident(batch_server, tmp_path):
    """Every line of every batch fails alike (an incident at the provider): no line is given
    up for its own sake, so no unit is replaced; the next run asks them again."""
    batch_server.line_failure_rate = 1.0
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=2)
    replies = asyncio.run(ask_all(client, requests(3)))
    assert all(isinstance(r, RequestFailed) and not r.permanent for r in replies)
    assert batch_server.lines_submitted == 6


def test_a_line_expiring_every_round_is_left_for_the_next_run(batch_server, tmp_path):
    batch_server.expire_rate = 1.0
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=3)
    replies = asyncio.run(ask_all(client, requests(1)))
    assert isinstance(replies[0], RequestFailed) and not replies[0].permanent
    assert batch_server.lines_submitted == 3


def test_a_batch_refused_by_validation_stops_with_one_clear_line(batch_server, tmp_path):
    batch_server.enqueue("validation_failed")
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(2)))
    assert all(isinstance(r, UserError) for r in replies)
    message = str(replies[0])
    assert "failed validation" in message and "duplicate_custom_id" in message
    assert "\n" not in message


def test_a_batch_over_the_token_quota_goes_again_without_using_a_round(batch_server, tmp_path):
    batch_server.enqueue("quota", "quota")
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(ask_all(client, requests(5)))
    assert all(r.parsed for r in replies)
    refused = [b for b in batch_server.batches.values() if b.outcome == "quota"]
    assert len(refused) == 2 and batch_server.lines_submitted == 5


def test_a_batch_alone_over_the_quota_it_states_is_cut_to_fit(batch_server, tmp_path):
    """OpenAI fails a batch of 16 lines for its "Limit: 600 enqueued tokens" (the fake counts
    70 a line): the lines go again at once in batches cut to fit the limit (at 4 bytes a token,
    4 of these 527-byte lines), not halved round after round, and a batch refused beside the
    run's own waits for one of them to finish."""
    batch_server.faults.enqueued_token_limit = 600
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(16)), 60))
    assert all(r.parsed for r in replies)
    first, *later = batch_server.batches.values()
    assert (len(first.lines), first.outcome) == (16, "quota")
    assert later and all(len(b.lines) == 4 for b in later)
    assert batch_server.lines_submitted == 16 and batch_server.paid_twice == 0


def test_anthropic_steps_down_to_a_tool_when_json_output_is_refused(batch_server, tmp_path):
    batch_server.refuse_output_format = True
    client = client_for(batch_server, "anthropic-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(4)))
    assert all(r.parsed["answer"] for r in replies)
    last = batch_server.requests_seen[-1]["requests"][0]["params"]
    assert "tools" in last and "output_config" not in last


def test_a_batch_the_provider_no_longer_knows_is_sent_again(batch_server, tmp_path):
    async def scenario() -> list:
        batch_server.hold = True
        client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
        asked = asyncio.ensure_future(ask_all(client, requests(3)))
        assert await asyncio.to_thread(batch_server.created.wait, 30)
        batch_server.batches.clear()  # deleted at the provider: polls now answer 404
        batch_server.hold = False
        return await asked

    replies = asyncio.run(scenario())
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 6
    jobs = BatchLedger(tmp_path / "glan.sqlite").jobs()
    assert [job.status for job in jobs] == ["lost", "completed"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_answer_to_create_is_looked_up_never_created_again(batch_server, tmp_path, kind):
    batch_server.lose_create_answers = 1  # the batch is made, its answer lost (a 502)
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(4)))
    assert all(r.parsed for r in replies)
    assert len(batch_server.batches) == 1 and batch_server.lines_submitted == 4


def test_a_cancel_from_outside_stops_the_run_and_keeps_what_finished(batch_server, tmp_path):
    ledger_path = tmp_path / "glan.sqlite"

    async def scenario() -> list:
        batch_server.hold = True
        client = client_for(batch_server, "openai-batch", ledger_path)
        asked = asyncio.ensure_future(ask_all(client, requests(6)))
        assert await asyncio.to_thread(batch_server.created.wait, 30)
        assert await cancel_live(BatchLedger(ledger_path)) == 1  # as glan batches --cancel
        batch_server.hold = False
        return await asked

    stopped = asyncio.run(scenario())
    assert all(isinstance(r, UserError) and "was cancelled" in str(r) for r in stopped)
    replies = asyncio.run(
        ask_all(client_for(batch_server, "openai-batch", ledger_path), requests(6))
    )
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 9  # 6, then only the 3 the cancel left undone
    assert batch_server.paid_twice == 0


def test_a_reply_downloaded_with_no_one_waiting_is_kept_for_the_next_ask(batch_server, tmp_path):
    ledger = tmp_path / "glan.sqlite"
    request = requests(1)[0]

    async def stopped_while_live() -> None:  # as Ctrl-C while the batch is out
        batch_server.hold = True
        client = client_for(batch_server, "openai-batch", ledger)
        asked = asyncio.ensure_future(client.chat(request))
        assert await asyncio.to_thread(batch_server.created.wait, 30)
        asked.cancel()
        await client.aclose()

    async def next_run() -> str:
        batch_server.hold = False
        client = client_for(batch_server, "openai-batch", ledger, poll_seconds=3600)
        await client.ensure_ready()  # re-attaches to the live batch
        while client.backend.summary()["by_status"]:
            await client.backend.poll_once()  # downloads it with no request waiting
        key = request.cache_key(client.backend.endpoint_id)
        assert BatchLedger(ledger).result(key) is not None
        reply = await client.chat(request)
        await client.aclose()
        return reply.text

    asyncio.run(stopped_while_live())
    assert asyncio.run(next_run())
    assert batch_server.lines_submitted == 1


def test_identical_requests_go_once_and_replies_are_kept_without_a_waiter(batch_server, tmp_path):
    same = requests(1) * 3
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, same))
    assert len({r.text for r in replies}) == 1
    assert batch_server.lines_submitted == 1
    key = same[0].cache_key(client.backend.endpoint_id)
    assert BatchLedger(tmp_path / "glan.sqlite").result(key)["text"] == replies[0].text


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_crash_between_create_and_staging_the_id_re_attaches(batch_server, tmp_path, kind):
    """`glan generate` is killed (SIGKILL) the moment it would write its first batch's id: the
    batch exists at the provider and the ledger holds only the intent. The same command again
    finds the batch by that intent (OpenAI: its file and metadata; Anthropic: its size and
    creation time), waits for it and submits none of its lines again."""
    args = generate_command(batch_server, tmp_path, 10, kind)
    batch_server.hold = True
    setting_the_id = "glan.llm.batch.ledger:BatchLedger.set_batch"
    assert run_dying_at(setting_the_id, "glan", *args) == -signal.SIGKILL
    [created] = batch_server.live_batches()
    [intent] = BatchLedger(tmp_path / "run" / "glan.sqlite").jobs()
    assert intent.batch_id is None and intent.live
    batch_server.hold = False
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert_valid_records(tmp_path / "run", 10)
    first = BatchLedger(tmp_path / "run" / "glan.sqlite").jobs()[0]
    assert (first.local_id, first.batch_id) == (intent.local_id, created)
    assert batch_server.batches[created].status in ("completed", "ended")  # waited for, used
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


def test_azure_is_spoken_with_its_api_version_and_key_header(batch_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_KEY", "secret")
    batch_server.api_key = "secret"
    settings = OpenAIBatchSettings(
        base_url=batch_server.azure_url,
        model="my-batch-deployment",
        api_version="2024-10-21",
        api_key_env="AZURE_KEY",
    )
    backend = create_backend(settings, batch=BatchOptions(**FAST_BATCH), ledger=tmp_path / "x")
    assert backend.api.kind == "azure" and backend.api.path == "/chat/completions"
    replies = asyncio.run(ask_all(LLMClient(backend), requests(3)))
    assert all(r.parsed for r in replies)
    bodies = [body for b in batch_server.batches.values() for _, body in b.lines]
    assert {b["model"] for b in bodies} == {"my-batch-deployment"}
