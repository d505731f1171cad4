"""llama.cpp's generation stood in for, in every Python process a command starts: instant
schema-valid replies (the fake server's); at the Nth generation of a process, if asked, a real
crash in native code (as a llama.cpp built for CPU features this CPU mishandles segfaults in
decode) or a generation that never ends.

`stand_in_env(folder, ...)` writes a sitecustomize into `folder` and returns the
environment that makes the command under test (and every Python it starts, the embedded
engine's own process included) load it. The model is still loaded for real; only the
generation is stood in for, so a run takes seconds, not minutes.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from pathlib import Path
from typing import Any

from glan.testing.fake_replies import default_replier

CRASH_AT = "GLAN_TEST_LLAMA_CRASH_AT"
BLOCK_AT = "GLAN_TEST_LLAMA_BLOCK_AT"
BLOCKED = "GLAN_TEST_LLAMA_BLOCKED"


def stand_in_env(
    folder: Path, crash_at: int | None = None, block_at: int | None = None
) -> dict[str, str]:
    """The environment for a command whose llama.cpp generations are stood in for. The
    process that runs them dies by SIGSEGV at its `crash_at`-th; at its `block_at`-th it writes
    its pid to `folder / "blocked"` and never returns."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "from glan.testing.llama_stand_in import install\n\ninstall()\n"
    )
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {
        "PYTHONPATH": path,
        CRASH_AT: "" if crash_at is None else str(crash_at),
        BLOCK_AT: "" if block_at is None else str(block_at),
        BLOCKED: str(folder / "blocked"),
    }


def install() -> None:
    """Patch llama_cpp in this process (called by the sitecustomize)."""
    import llama_cpp

    crash_at = int(os.environ.get(CRASH_AT) or 0)
    block_at = int(os.environ.get(BLOCK_AT) or 0)
    generations = 0
    from_json_schema = llama_cpp.LlamaGrammar.from_json_schema.__func__

    def keep_schema(cls: Any, json_schema: str, verbose: bool = True) -> Any:
        grammar = from_json_schema(cls, json_schema, verbose=verbose)
        grammar.stand_in_schema = json.loads(json_schema)
        return grammar

    def reply(self: Any, messages: list[dict[str, str]], **kwargs: Any) -> dict[str, Any]:
        nonlocal generations
        generations += 1
        if generations == crash_at:
            ctypes.string_at(0)  # reads address 0: SIGSEGV inside native code
        if generations == block_at:
            blocked = Path(os.environ[BLOCKED])
            blocked.with_suffix(".part").write_text(str(os.getpid()))
            blocked.with_suffix(".part").replace(blocked)  # whole, once it exists
            threading.Event().wait()
        body: dict[str, Any] = {"messages": messages, "seed": kwargs.get("seed")}
        grammar = kwargs.get("grammar")
        if grammar is not None:
            schema = grammar.stand_in_schema
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
        answer = default_replier(body)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return {
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10},
        }

    llama_cpp.LlamaGrammar.from_json_schema = classmethod(keep_schema)
    llama_cpp.Llama.create_chat_completion = reply
