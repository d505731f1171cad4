"""What the batch tests share: clients on the fake batch servers (OpenAI, Azure, Anthropic
shapes), numbered requests, a run's records checked, and `glan` run as a command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from glan.llm import ChatRequest, LLMClient, user
from glan.llm.batch.options import BatchOptions
from glan.llm.settings import AnthropicBatchSettings, OpenAIBatchSettings, create_backend
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.runs import FAST_BATCH, batch_config_for, read_jsonl

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 80}},
    "required": ["answer"],
}
KINDS = ("openai-batch", "anthropic-batch")


def settings_for(server: FakeBatchServer, kind: str) -> Any:
    """`kind`: openai-batch, anthropic-batch, or azure (openai-batch at the Azure address)."""
    if kind == "azure":
        return OpenAIBatchSettings(
            base_url=server.azure_url, model="batch-deployment", api_version="2024-10-21"
        )
    if kind == "openai-batch":
        return OpenAIBatchSettings(base_url=server.base_url, model="fake-model")
    return AnthropicBatchSettings(base_url=server.base_url, model="fake-claude")


def client_for(server: FakeBatchServer, kind: str, ledger: Path, **options: Any) -> LLMClient:
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


def glan(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glan", *args], capture_output=True, text=True, timeout=600,
        env=os.environ.copy(), **kwargs,
    )  # fmt: skip


def generate_command(
    server: FakeBatchServer, tmp_path: Path, n: int, kind: str = "openai-batch"
) -> list[str]:
    config = tmp_path / "config.yaml"
    cfg = batch_config_for(server, kind, batch={"max_requests_per_batch": 80})
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    return ["generate", "-o", str(tmp_path / "run"), "-n", str(n), "-c", str(config), "-q"]


def start_and_kill_once_a_batch_is_live(server: FakeBatchServer, args: list[str]) -> None:
    """`glan ARGS` in a process of its own, killed (-9) once its first batch was created; the
    server holds its batches in progress."""
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
