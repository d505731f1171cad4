"""Embedded-model speed by thread count, on an idle machine and beside a CPU-busy process.

llama.cpp's threads wait for each other at every layer: when one of them shares its core with
another busy process, all of them wait for it. This measures SmolLM2 (the packaged GGUF) through
llama-cpp-python, for 1..cores threads, each with and without a competing busy-loop process:

- prompt tokens/s: reading a ~300-token prompt (n_threads_batch);
- generation tokens/s: 64 greedy tokens (n_threads).

Each cell is the median of --repeats runs; the model is loaded once per thread count.

Usage: python bench/local_threads.py [--repeats 3] [--gen-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from glan.llm.local import default_n_threads, resolve_model

PROMPT = "Summarise the following notes for a first-year student in three sentences. " + " ".join(
    f"Note {i}: photosynthesis turns light, water and carbon dioxide into sugar and oxygen "
    f"inside the chloroplasts of plant cells."
    for i in range(12)
)


def busy_process() -> subprocess.Popen[bytes]:
    """A competitor that keeps one core fully busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(n_threads: int, repeats: int, gen_tokens: int) -> tuple[float, float]:
    """Median (prompt tokens/s, generation tokens/s) at this thread count."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(resolve_model(None)),
        n_ctx=2048,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
    prompt = llm.tokenize(PROMPT.encode())
    prompt_rates, gen_rates = [], []
    for _ in range(repeats):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        prompt_rates.append(len(prompt) / (time.perf_counter() - started))
        started = time.perf_counter()
        made = 0
        for _token in llm.generate([], temp=0.0, reset=False):
            made += 1
            if made >= gen_tokens:
                break
        gen_rates.append(made / (time.perf_counter() - started))
    del llm
    return statistics.median(prompt_rates), statistics.median(gen_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"cores: {cores}; glan's default n_threads here: {default_n_threads()}")
    print("| threads | machine | prompt tokens/s | generation tokens/s |")
    print("|---:|---|---:|---:|")
    for busy in (False, True):
        for n_threads in range(1, cores + 1):
            competitor = busy_process() if busy else None
            try:
                time.sleep(0.5 if busy else 0)  # let the competitor reach full speed
                prompt_rate, gen_rate = measure(n_threads, args.repeats, args.gen_tokens)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            label = "1 busy process beside it" if busy else "no competitor"
            print(f"| {n_threads} | {label} | {prompt_rate:,.0f} | {gen_rate:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
