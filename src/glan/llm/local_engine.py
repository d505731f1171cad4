"""The embedded model's own process: llama.cpp loaded here and asked over a pipe by
`glan.llm.local_process.EngineProcess`.

A crash of the native library (a build for CPU features this CPU mishandles segfaults in
decode) ends this process, not the run: the run sees how it died and says so in one line.

Started as a script, with only the standard library and llama_cpp: glan's own imports would
slow its start. One JSON object a line each way: the settings, then one request at a time;
the first line back says the model is loaded, each next one answers a request.
"""

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from queue import SimpleQueue
from typing import Any, TextIO


def failure(exc: BaseException) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def answer(llm: Any, request: dict[str, Any], grammars: dict[str, Any]) -> dict[str, Any]:
    """One chat completion; an exception comes back as data (its type and message)."""
    kwargs: dict[str, Any] = {}
    schema = request.get("schema")  # the grammar-safe schema as JSON text: the grammar's key
    try:
        if schema is not None:
            grammar = grammars.get(schema)
            if grammar is None:
                from llama_cpp import LlamaGrammar

                grammar = grammars[schema] = LlamaGrammar.from_json_schema(schema, verbose=False)
            kwargs["grammar"] = grammar
        out = llm.create_chat_completion(
            messages=request["messages"],
            temperature=request["temperature"],
            top_p=request["top_p"],
            max_tokens=request["max_tokens"],
            seed=request["seed"],
            **kwargs,
        )
    except Exception as exc:
        return failure(exc)
    choice = out["choices"][0]
    usage = out.get("usage") or {}
    return {
        "text": choice["message"].get("content") or "",
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
    }


def load(settings: dict[str, Any]) -> Any:
    from llama_cpp import Llama

    threads = settings["n_threads"]
    return Llama(
        model_path=settings["model_path"],
        n_ctx=settings["n_ctx"],
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


def lines_until_parent_exits(source: TextIO) -> Iterator[str]:
    """The lines the parent sends. Read in a thread of their own: when the parent exits (Ctrl-C
    included) the pipe closes and this process ends at once, even in a generation."""
    lines: SimpleQueue[str] = SimpleQueue()

    def read() -> None:
        for line in source:
            lines.put(line)
        os._exit(0)

    threading.Thread(target=read, name="glan-engine-input", daemon=True).start()
    while True:
        yield lines.get()


def serve(source: TextIO, replies: TextIO) -> None:
    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    requests = lines_until_parent_exits(source)
    try:
        llm = load(json.loads(next(requests)))
    except Exception as exc:
        send(failure(exc))
        return
    send({"ready": True})
    grammars: dict[str, Any] = {}
    for line in requests:
        send(answer(llm, json.loads(line), grammars))


def main() -> None:
    # The parent decides when to stop: a Ctrl-C at the terminal reaches the whole process
    # group, and this process ends when the parent's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Replies go on a copy of stdout; what native code prints to stdout goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
