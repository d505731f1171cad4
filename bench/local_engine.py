"""What running llama.cpp in a process of its own costs, against loading it in the run's process.

- start: from nothing to a loaded model, each time in a fresh interpreter (so llama_cpp's import
  is paid as a run pays it): `Llama(...)` in process, against `EngineProcess.start` (a second
  interpreter, the import and the load there);
- a request: one chat completion of 1 token (so the pipe's share is as large as it gets), in
  process against through the pipe, after one warm-up each;
- a reply: 128 greedy tokens, the two ways alternated (so both see the same load).

Starts are medians of --repeats, 1-token requests of --requests, replies of --replies.

Usage: python bench/local_engine.py [--repeats 5] [--requests 20] [--replies 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from glan.llm import ChatRequest, user
from glan.llm.local import LocalBackend, engine_request

IN_PROCESS_START = """
import time
started = time.perf_counter()
from llama_cpp import Llama
from glan.llm.local import LocalBackend
backend = LocalBackend()
Llama(model_path=str(backend.path), n_ctx=backend.n_ctx, n_threads=backend.n_threads,
      n_threads_batch=backend.n_threads, verbose=False)
print(time.perf_counter() - started)
"""

ENGINE_START = """
import time
started = time.perf_counter()
from glan.llm.local import LocalBackend
backend = LocalBackend()
backend._start()
print(time.perf_counter() - started)
backend._engine.close()
"""

REQUEST = ChatRequest(messages=user("Say hi."), max_tokens=1, temperature=0.0)
REPLY = ChatRequest(messages=user("Write a long story about a cat."), max_tokens=128, temperature=0)


def fresh_interpreter_seconds(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def request_seconds(ask: Callable[[], object], n: int) -> float:
    ask()  # warm-up: the first request pays for buffers and the chat template
    times = []
    for _ in range(n):
        started = time.perf_counter()
        ask()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--replies", type=int, default=4)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    starts_in = [fresh_interpreter_seconds(IN_PROCESS_START) for _ in range(args.repeats)]
    starts_engine = [fresh_interpreter_seconds(ENGINE_START) for _ in range(args.repeats)]

    from llama_cpp import Llama

    backend = LocalBackend()
    llm = Llama(
        model_path=str(backend.path),
        n_ctx=backend.n_ctx,
        n_threads=backend.n_threads,
        n_threads_batch=backend.n_threads,
        verbose=False,
    )

    def in_process(request: ChatRequest) -> None:
        message = engine_request(request)
        del message["schema"]  # none here; in process, llama-cpp-python takes a grammar object
        llm.create_chat_completion(**message)

    def seconds(ask: Callable[[], object]) -> float:
        started = time.perf_counter()
        ask()
        return time.perf_counter() - started

    backend._start()
    direct = request_seconds(lambda: in_process(REQUEST), args.requests)
    piped = request_seconds(lambda: backend._complete_sync(REQUEST), args.requests)
    long_direct, long_piped = [], []
    for _ in range(args.replies):  # alternated: both ways see the same load
        long_direct.append(seconds(lambda: in_process(REPLY)))
        long_piped.append(seconds(lambda: backend._complete_sync(REPLY)))
    backend._engine.close()
    print("| | in process | engine process | difference |")
    print("|---|---:|---:|---:|")
    start_in, start_engine = statistics.median(starts_in), statistics.median(starts_engine)
    print(
        f"| start to a loaded model | {start_in:.2f} s | {start_engine:.2f} s "
        f"| {start_engine - start_in:+.2f} s |"
    )
    print(
        f"| a 1-token request | {direct * 1000:.1f} ms | {piped * 1000:.1f} ms "
        f"| {(piped - direct) * 1000:+.1f} ms |"
    )
    reply_in, reply_engine = statistics.median(long_direct), statistics.median(long_piped)
    print(
        f"| a 128-token reply | {reply_in:.2f} s | {reply_engine:.2f} s "
        f"| {reply_engine - reply_in:+.2f} s |"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
