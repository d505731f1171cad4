"""The embedded llama.cpp backend (the real llama.cpp server: tests/test_llama_server.py)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glan.errors import UserError
from glan.llm import ChatRequest, LLMClient, RequestFailed, user
from glan.llm.backend import Completion
from glan.llm.errors import BadRequest
from glan.llm.llama_build import portable_cmake_args, reinstall_command
from glan.llm.local import (
    LocalBackend,
    LocalEngineError,
    completion_from,
    default_n_threads,
    engine_request,
    resolve_model,
)
from glan.llm.local_engine import answer
from glan.llm.local_process import death_message
from glan.testing.cli import assert_one_clear_line, glan
from glan.testing.llama_stand_in import stand_in_env

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


def reply_through_the_pipe(llm) -> Completion:
    """What the backend makes of `llm`'s answer in the engine's process, JSON both ways."""
    request = json.loads(json.dumps(engine_request(ChatRequest(messages=user("a prompt")))))
    return completion_from(json.loads(json.dumps(answer(llm, request, {}))))


def test_a_context_overflow_fails_that_request_not_the_run():
    # The exact message of llama_cpp.Llama._create_completion (0.3.x).
    llm = OverflowingLlama(ValueError("Requested tokens (5120) exceed context window of 4096"))
    with pytest.raises(BadRequest, match=r"prompt too long .*5120.*4096"):
        reply_through_the_pipe(llm)


def test_other_llama_errors_are_not_taken_for_an_overflow():
    llm = OverflowingLlama(ValueError("logprobs is not supported"))
    with pytest.raises(LocalEngineError, match="ValueError: logprobs"):
        reply_through_the_pipe(llm)


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


def requests_made(run: Path) -> int:
    usage = json.loads((run / "manifest.json").read_text())["usage_this_invocation"]
    return sum(row["requests"] for models in usage.values() for row in models.values())


@pytest.mark.slow
def test_a_crash_of_llama_cpp_is_one_line_with_the_fix_and_the_next_run_resumes(tmp_path):
    """pip builds llama.cpp for the CPU it compiles on (-march=native), and on some CPUs
    (AVX-512/AMX Xeons) that build segfaults in decode. The user gets the cause and the fix in
    one line, not a bare `Segmentation fault`, and keeps the replies made before the crash."""
    crashy, clean = tmp_path / "crashy", tmp_path / "clean"
    args = ("-n", "2", "-q")
    crashed = glan("generate", "--out", str(crashy), *args, env=stand_in_env(tmp_path, crash_at=4))
    assert_one_clear_line(
        crashed,
        "llama.cpp crashed (SIGSEGV)",
        'CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF',
        "pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python",
        "re-run the same command to resume",
    )
    assert requests_made(crashy) == 3  # answered before the crash
    resumed = glan("generate", "--out", str(crashy), *args, env=stand_in_env(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = glan("generate", "--out", str(clean), *args, env=stand_in_env(tmp_path))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    # Nothing answered before the crash was asked again, and the records are the same.
    assert 3 + requests_made(crashy) == requests_made(clean)
    for name in ("instructions.jsonl", "subjects.jsonl", "syllabi.jsonl"):
        assert (crashy / name).read_bytes() == (clean / name).read_bytes()


def alive(pid: int) -> bool:
    """Whether `pid` runs (one that exited and waits for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_a_run_killed_in_a_generation_leaves_no_llama_cpp_process_behind(tmp_path):
    """llama.cpp runs in a process of its own, which must end with the run's, even in a
    generation (here one that never ends), rather than compute on for nobody."""
    run = subprocess.Popen(
        [sys.executable, "-m", "glan", "generate", "--out", str(tmp_path / "run"), "-n", "1"],
        env={**os.environ, **stand_in_env(tmp_path, block_at=1)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    blocked = tmp_path / "blocked"
    try:
        deadline = time.monotonic() + 120
        while not blocked.exists():  # the model is loaded and a generation under way
            assert run.poll() is None and time.monotonic() < deadline, "no generation began"
            time.sleep(0.05)  # polling for the condition, not waiting on luck
        engine = int(blocked.read_text())
        assert engine != run.pid
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 30
    while alive(engine):
        assert time.monotonic() < deadline, "the engine's process outlived the run"
        time.sleep(0.05)


def test_a_model_llama_cpp_cannot_load_is_one_clear_line(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    proc = glan("generate", "--out", str(tmp_path / "run"), "-n", "1", "--model", str(broken))
    assert_one_clear_line(proc, f"llama.cpp could not load {broken}")


@pytest.mark.parametrize(
    ("returncode", "last_words", "needles", "not_said"),
    [
        (-signal.SIGILL, "", ["llama.cpp crashed (SIGILL)", "CMAKE_ARGS="], []),
        (-signal.SIGABRT, "GGML_ASSERT(n > 0) failed", ["SIGABRT", "GGML_ASSERT"], []),
        (-signal.SIGKILL, "", ["killed (SIGKILL: out of memory?)"], ["CMAKE_ARGS"]),
        (1, "MemoryError", ["exited with status 1", "MemoryError"], ["CMAKE_ARGS"]),
    ],
    ids=["bad instruction", "assertion", "killed", "exited"],
)
def test_each_end_of_the_engine_is_told_with_its_own_remedy(
    returncode, last_words, needles, not_said
):
    """A rebuild is offered for a native crash only, and a run is always resumable."""
    message = death_message(returncode, last_words)
    assert "\n" not in message and message.endswith("re-run the same command to resume")
    assert all(n in message for n in needles) and not any(n in message for n in not_said)


def test_the_portable_rebuild_uses_the_flags_of_scripts_venv_sh():
    """What the crash line tells a pip user to run builds llama.cpp as scripts/glan does."""
    script = (Path(__file__).parent.parent / "scripts" / "_venv.sh").read_text()
    x86_64_v3 = re.search(r'args="\$args (-DGGML_NATIVE=OFF[^"]*)"', script)
    assert x86_64_v3 is not None
    assert portable_cmake_args("x86_64", {"avx2"}) == f"-DLLAVA_BUILD=OFF {x86_64_v3[1]}"
    assert portable_cmake_args("x86_64", {"avx"}) == "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
    version = importlib.metadata.version("llama-cpp-python")
    assert reinstall_command("py").endswith(
        "py -m pip install --force-reinstall --no-deps --no-cache-dir --no-binary "
        f"llama-cpp-python llama-cpp-python=={version}"
    )
