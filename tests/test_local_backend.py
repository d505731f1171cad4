"""The embedded llama.cpp backend (the real llama.cpp server: tests/test_llama_server.py)."""

from __future__ import annotations

import pytest

from glan.errors import UserError
from glan.llm import ChatRequest, LLMClient, RequestFailed, user
from glan.llm.errors import BadRequest
from glan.llm.local import LocalBackend, default_n_threads, resolve_model

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


def test_default_threads_leave_a_core_free():
    """llama.cpp's threads wait for each other: one sharing a busy core stalls them all."""
    assert [default_n_threads(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]


def test_local_backend_threads_default_and_setting():
    assert LocalBackend().n_threads == default_n_threads()
    assert LocalBackend(n_threads=3).n_threads == 3  # llm.n_threads in the config


class OverflowingLlama:
    """llama-cpp-python's Llama as it answers a prompt longer than its context."""

    def __init__(self, error: ValueError) -> None:
        self.error = error

    def create_chat_completion(self, **kwargs):
        raise self.error


async def test_a_context_overflow_fails_that_request_not_the_run():
    backend = LocalBackend()
    # The exact message of llama_cpp.Llama._create_completion (0.3.x).
    backend._llm = OverflowingLlama(
        ValueError("Requested tokens (5120) exceed context window of 4096")
    )
    with pytest.raises(BadRequest, match=r"prompt too long .*5120.*4096"):
        await backend.complete(ChatRequest(messages=user("a long prompt")))


async def test_other_llama_errors_are_not_taken_for_an_overflow():
    backend = LocalBackend()
    backend._llm = OverflowingLlama(ValueError("logprobs is not supported"))
    with pytest.raises(ValueError, match="logprobs"):
        await backend.complete(ChatRequest(messages=user("hello")))


@pytest.mark.slow
async def test_a_prompt_longer_than_the_real_models_context_is_replaced_and_the_next_answered():
    client = LLMClient(LocalBackend(n_ctx=512))
    with pytest.raises(RequestFailed, match="exceed context window of 512") as caught:
        await client.chat(ChatRequest(messages=user("photosynthesis " * 600), max_tokens=8))
    assert caught.value.permanent  # replaced by the walk like any refused request
    reply = await client.chat(ChatRequest(messages=user("Say hi."), max_tokens=8))
    assert reply.text.strip()
    await client.aclose()


@pytest.mark.slow
async def test_local_backend_returns_schema_valid_nested_json(tmp_path):
    client = LLMClient(LocalBackend())  # default threads: never collapses
    reply = await client.chat(
        ChatRequest(messages=user(PROMPT), json_schema=NESTED, max_tokens=400, temperature=1.0)
    )
    assert reply.parsed["level"] in {"beginner", "intermediate", "advanced"}
    assert reply.parsed["sessions"] and all(s["concepts"] for s in reply.parsed["sessions"])
    await client.aclose()


@pytest.mark.slow
def test_ctrl_c_during_a_local_generation_exits_at_once(tmp_path):
    """llama.cpp cannot be interrupted mid-call: the run must not wait the call out. Here the
    call never returns (it says when it has begun, then blocks, as a long generation does),
    so a run that waited for it would never exit."""
    import signal
    import subprocess
    import sys
    import time

    out, started = tmp_path / "run", tmp_path / "generating"
    never_returns = (
        "import sys, threading\n"
        "from glan.llm.local import LocalBackend\n"
        "started = sys.argv[1]\n"
        "def generate(self, request):\n"
        "    open(started, 'w').close()\n"
        "    threading.Event().wait()\n"
        "LocalBackend._complete_sync = generate\n"
        "sys.argv = ['glan', 'generate', '--out', sys.argv[2], '-n', '8', '-q']\n"
        "from glan.cli import main\n"
        "main()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", never_returns, str(started), str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():  # the model is loaded and a generation under way
            assert proc.poll() is None and time.monotonic() < deadline, "no generation began"
            time.sleep(0.05)  # polling for the condition, not waiting on luck
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)  # a run that waited would never get here
    finally:
        proc.kill()
    assert proc.returncode == 130 and "re-run the same command to resume" in stderr
