"""The embedded llama.cpp backend and a real third-party OpenAI-compatible server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from glan.errors import UserError
from glan.llm import ChatRequest, LLMClient, user
from glan.llm.local import LocalBackend, resolve_model
from glan.llm.openai_http import OpenAIBackend

NESTED = {
    "type": "object",
    "properties": {
        "course": {"type": "string", "maxLength": 60},
        "level": {"enum": ["beginner", "intermediate", "advanced"]},
        "sessions": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 60},
                    "concepts": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {"type": "string", "maxLength": 40},
                    },
                },
                "required": ["title", "concepts"],
            },
        },
    },
    "required": ["course", "level", "sessions"],
}
PROMPT = "Design a short course on photosynthesis with its class sessions and key concepts."


def test_packaged_model_resolves_without_import():
    path = resolve_model(None)
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_gguf_path_resolves(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == gguf


def test_missing_gguf_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_hub_id_goes_to_the_downloader(tmp_path):
    calls = []

    def fake_download(repo: str, filename: str | None) -> str:
        calls.append((repo, filename))
        return str(tmp_path / "downloaded.gguf")

    assert (
        resolve_model("owner/repo-GGUF:model.Q4_K_M.gguf", fake_download).name == "downloaded.gguf"
    )
    resolve_model("owner/repo-GGUF", fake_download)
    assert calls == [("owner/repo-GGUF", "model.Q4_K_M.gguf"), ("owner/repo-GGUF", None)]


def test_unknown_spec_is_a_user_error():
    with pytest.raises(UserError, match="unknown local model"):
        resolve_model("not-a-model")


@pytest.mark.slow
async def test_local_backend_returns_schema_valid_nested_json(tmp_path):
    client = LLMClient(LocalBackend(n_threads=2))
    reply = await client.chat(
        ChatRequest(messages=user(PROMPT), json_schema=NESTED, max_tokens=400, temperature=1.0)
    )
    assert reply.parsed["level"] in {"beginner", "intermediate", "advanced"}
    assert reply.parsed["sessions"] and all(s["concepts"] for s in reply.parsed["sessions"])
    await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """llama-cpp-python's own OpenAI-compatible server, serving the packaged SmolLM2."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(resolve_model(None)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("llama_cpp.server exited at start")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
async def test_openai_backend_against_llama_cpp_server(llama_server, tmp_path: Path):
    backend = OpenAIBackend(model="smollm2", base_url=llama_server, timeout_s=120)
    client = LLMClient(backend)
    plain = await client.chat(ChatRequest(messages=user("Name one primary colour."), max_tokens=30))
    assert plain.text.strip() and plain.usage.completion_tokens > 0
    structured = await client.chat(
        ChatRequest(messages=user(PROMPT), json_schema=NESTED, max_tokens=400, temperature=1.0)
    )
    assert structured.parsed["sessions"]
    await client.aclose()
