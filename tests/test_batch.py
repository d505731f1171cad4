"""Batch APIs (OpenAI/Azure, Anthropic) against the fake batch servers: every outcome handled,
re-attached after any crash, never paid twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import typing
from pathlib import Path

import orjson
import pytest
import yaml
from pydantic import TypeAdapter
from rich.console import Console

from glan.api import generate, plan
from glan.cli.dry_run import print_dry_run
from glan.cli.progress import progress_line
from glan.config import load_config
from glan.errors import UserError
from glan.estimate import estimate
from glan.llm import ChatRequest, LLMClient, RequestFailed, user
from glan.llm.batch.anthropic_batch import AnthropicBatchAPI
from glan.llm.batch.ledger import BatchLedger
from glan.llm.batch.manage import cancel_live
from glan.llm.batch.openai_batch import OpenAIBatchAPI
from glan.llm.batch.options import BatchOptions
from glan.llm.settings import AnthropicBatchSettings, OpenAIBatchSettings, create_backend
from glan.llm.usage import Price
from glan.taxonomy import load_taxonomy
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.fake_server import FakeServer
from glan.testing.runs import FAST_BATCH, batch_config_for, config_for, read_jsonl
from glan.tree.progress import RunProgress

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 80}},
    "required": ["answer"],
}
KINDS = ("openai-batch", "anthropic-batch")


@pytest.fixture
def batch_server():
    server = FakeBatchServer().start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(server: FakeBatchServer, kind: str):
    if kind == "openai-batch":
        return OpenAIBatchSettings(base_url=server.base_url, model="fake-model")
    return AnthropicBatchSettings(base_url=server.base_url, model="fake-claude")


def client_for(server, kind, ledger: Path, **options) -> LLMClient:
    opts = BatchOptions(**{**FAST_BATCH, **options})
    backend = create_backend(settings_for(server, kind), batch=opts, ledger=ledger)
    backend.api.backoff_s = 0.01
    return LLMClient(backend)


def requests(n: int, schema: bool = True) -> list[ChatRequest]:
    return [
        ChatRequest(messages=user(f"question {i}", system="be brief"), json_schema=SCHEMA)
        if schema
        else ChatRequest(messages=user(f"question {i}"))
        for i in range(n)
    ]


async def ask_all(client: LLMClient, reqs: list[ChatRequest]) -> list:
    try:
        return await asyncio.gather(*(client.chat(r) for r in reqs), return_exceptions=True)
    finally:
        await client.aclose()


def assert_valid_records(run: Path, n: int) -> None:
    records = read_jsonl(run / "instructions.jsonl")
    assert len(records) == n
    assert len({r["id"] for r in records}) == n
    for r in records:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(m["content"] for m in r["messages"])
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["status"] == "complete"


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
    batch_server.line_failure_rate = 1.0  # the same HTTP 500 for these lines every round
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=2)
    replies = asyncio.run(ask_all(client, requests(3)))
    assert all(isinstance(r, RequestFailed) and r.permanent for r in replies)
    assert "2 batch rounds" in str(replies[0])
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


def test_a_batch_alone_too_large_for_the_quota_is_sent_again_in_halves(batch_server, tmp_path):
    batch_server.enqueue("quota")
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(ask_all(client, requests(8)))
    assert all(r.parsed for r in replies)
    assert [len(b.lines) for b in batch_server.batches.values()] == [8, 4, 4]


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


def test_identical_requests_go_once_and_replies_are_kept_without_a_waiter(batch_server, tmp_path):
    same = requests(1) * 3
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, same))
    assert len({r.text for r in replies}) == 1
    assert batch_server.lines_submitted == 1
    key = same[0].cache_key(client.backend.endpoint_id)
    assert BatchLedger(tmp_path / "glan.sqlite").result(key)["text"] == replies[0].text


@pytest.mark.parametrize("kind", KINDS)
def test_a_crash_between_create_and_staging_the_id_re_attaches(
    batch_server, tmp_path, monkeypatch, kind
):
    """The batch was created, and the process died before its id was written: the next run
    finds it by the staged intent (OpenAI: its file and metadata; Anthropic: its size and
    creation time), waits for it and submits none of its lines again."""

    class Killed(BaseException):
        pass

    def die(*args):
        raise Killed

    original = BatchLedger.set_batch
    monkeypatch.setattr(BatchLedger, "set_batch", die)
    batch_server.hold = True
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    assert all(isinstance(r, UserError) for r in asyncio.run(ask_all(client, requests(5))))
    assert len(batch_server.live_batches()) == 1
    monkeypatch.setattr(BatchLedger, "set_batch", original)
    batch_server.hold = False
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(5)))
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 5 and len(batch_server.batches) == 1


# ---- whole runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_n200_with_failed_lines_expiry_and_shuffled_output(tmp_path, kind):
    with FakeBatchServer(line_failure_rate=0.05, expire_rate=0.2, shuffle=True) as server:
        # A line fails a round with p ~ 0.15 here (a fifth of batches expire half done, 5% of
        # lines fail): 8 rounds make a line left for the next run a one-in-millions event.
        options = {"max_requests_per_batch": 60, "max_rounds": 8}
        cfg = batch_config_for(server, kind, batch=options)
        result = generate(tmp_path / "run", 200, cfg)
    assert result.instructions == 200
    assert_valid_records(tmp_path / "run", 200)
    outcomes = [b.status for b in server.batches.values()]
    assert "expired" in outcomes or any(b.outcome == "expire" for b in server.batches.values())
    assert server.paid_twice == 0
    assert max(server.answered.values()) == 1  # no reply paid twice


def test_each_level_of_the_tree_goes_out_in_one_batch_and_progress_shows_it(batch_server, tmp_path):
    """The walk keeps every pending request of a level open (the work window is the batch
    transport's, not the HTTP concurrency), so a run without failures is four batches: the
    listings, the syllabi, the questions, the answers."""
    progress = RunProgress()
    generate(tmp_path / "run", 200, batch_config_for(batch_server), progress=progress)
    sizes = [len(b.lines) for b in batch_server.batches.values()]
    assert len(sizes) == 4 and sizes[2:] == [200, 200]
    line = progress_line(progress)
    assert "batches: none live; 480 lines done" in line and "oldest" in line


def test_mixed_online_and_batch_run(fake_server, batch_server, tmp_path):
    cfg = config_for(
        fake_server,
        stages={
            stage: {"backend": "openai-batch", "base_url": batch_server.base_url}
            for stage in ("questions", "answers")
        },
        batch=FAST_BATCH,
    )
    fake_server.record_bodies = True
    generate(tmp_path / "run", 30, cfg)
    assert_valid_records(tmp_path / "run", 30)
    online = {b["max_tokens"] for b in fake_server.seen_bodies}
    batched = {body["max_tokens"] for b in batch_server.batches.values() for _, body in b.lines}
    assert online == {2048, 3072}  # subjects and syllabi only
    assert batched == {768, 1536}  # questions and answers only
    assert batch_server.lines_submitted == 60


def test_dry_run_and_manifest_price_batch_stages_at_the_batch_price(batch_server, tmp_path):
    price = {"input": 2.0, "output": 8.0}
    online = config_for(FakeServer(), prices={"fake-model": price})
    batch = batch_config_for(batch_server, prices={"fake-model": price})
    tax = load_taxonomy()
    full = {e.stage: e.cost_usd for e in estimate(plan(100, online, tax), online)}
    half = {e.stage: e.cost_usd for e in estimate(plan(100, batch, tax), batch)}
    assert half == pytest.approx({stage: cost / 2 for stage, cost in full.items()})
    custom = batch_config_for(batch_server, prices={"fake-model": {**price, "batch_factor": 0.6}})
    custom_cost = {e.stage: e.cost_usd for e in estimate(plan(100, custom, tax), custom)}
    assert custom_cost == pytest.approx({s: c * 0.6 for s, c in full.items()})
    shown = Console(record=True, width=200)
    print_dry_run(plan(100, batch, tax), batch, shown)
    assert shown.export_text().count("fake-model (batch)") == 4
    result = generate(tmp_path / "run", 10, batch)
    usage = result.manifest["usage"]
    tokens = [(r["prompt_tokens"], r["completion_tokens"]) for rows in usage.values()
              for r in rows.values()]  # fmt: skip
    online_cost = sum(Price(**price).cost(p, c) for p, c in tokens)
    assert result.manifest["cost_usd"] == pytest.approx(online_cost / 2, rel=1e-6)


def test_batch_options_are_set_with_dotted_keys():
    cfg = load_config(
        None,
        {"llm.backend": "anthropic-batch", "batch.poll_seconds": 5, "batch.max_rounds": 2},
    )
    assert (cfg.batch.poll_seconds, cfg.batch.max_rounds) == (5, 2)
    assert cfg.batch.limits("anthropic") == (100_000, 256_000_000)
    assert cfg.batch.limits("azure") == (100_000, 200_000_000)
    assert BatchOptions(max_requests_per_batch=10).limits("openai") == (10, 200_000_000)
    with pytest.raises(UserError, match=r"batch\.poll_second"):
        load_config(None, {"batch.poll_second": 5})


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


# ---- crashes, cancels and `glan batches` ---------------------------------------------------
def glan(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glan", *args], capture_output=True, text=True, timeout=600,
        env=os.environ.copy(), **kwargs,
    )  # fmt: skip


def generate_command(server: FakeBatchServer, tmp_path: Path, n: int) -> list[str]:
    config = tmp_path / "config.yaml"
    cfg = batch_config_for(server, batch={"max_requests_per_batch": 80})
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    return ["generate", "-o", str(tmp_path / "run"), "-n", str(n), "-c", str(config), "-q"]


def start_and_kill_once_a_batch_is_live(server: FakeBatchServer, args: list[str]) -> None:
    server.hold = True
    proc = subprocess.Popen(
        [sys.executable, "-m", "glan", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert server.created.wait(120), "no batch was created"
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    assert server.live_batches()


@pytest.mark.slow
def test_kill9_once_the_first_batch_is_live_then_the_same_command(batch_server, tmp_path):
    args = generate_command(batch_server, tmp_path, 200)
    start_and_kill_once_a_batch_is_live(batch_server, args)
    batch_server.hold = False
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert_valid_records(tmp_path / "run", 200)
    assert batch_server.paid_twice == 0
    assert batch_server.seen_twice == []  # no custom_id submitted twice


@pytest.mark.slow
def test_cancel_then_resume(batch_server, tmp_path):
    args = generate_command(batch_server, tmp_path, 60)
    start_and_kill_once_a_batch_is_live(batch_server, args)
    cancelled = glan("batches", str(tmp_path / "run"), "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelling (live)" in cancelled.stdout and "openai-batch" in cancelled.stdout
    first = next(iter(batch_server.batches.values()))
    assert first.cancelled
    batch_server.hold = False
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert_valid_records(tmp_path / "run", 60)
    assert first.status == "cancelled" and 0 < first.completed < len(first.lines)
    assert batch_server.paid_twice == 0  # the cancelled batch's replies were kept
    listing = glan("batches", str(tmp_path / "run"))
    assert listing.returncode == 0 and "cancelled" in listing.stdout
    assert "(live)" not in listing.stdout


def test_batches_on_a_directory_without_a_run_is_one_clear_line(tmp_path):
    proc = glan("batches", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr
