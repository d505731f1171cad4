"""Decontamination and near-duplicate throughput on 1M synthetic questions.

Decontamination runs against all five shipped benchmarks (GSM8K, MMLU, HumanEval, IFEval,
MATH-500 subset); 0.1% of the questions are planted benchmark items with an added sentence,
and 2% are near-duplicates (one word changed) of earlier questions, so the figures come with a
recall check. Each phase runs in its own process so its peak RSS is its own.

Usage: python bench/clean_throughput.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator

VOCAB = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "and",
    "is",
    "what",
    "how",
    "why",
    "which",
    "find",
    "explain",
    "compute",
    "given",
    "show",
    "that",
    "for",
    "with",
    "energy",
    "force",
    "mass",
    "velocity",
    "cell",
    "protein",
    "market",
    "price",
    "demand",
    "supply",
    "equation",
    "function",
    "graph",
    "theorem",
    "proof",
    "integral",
    "derivative",
    "matrix",
    "vector",
    "history",
    "war",
    "empire",
    "treaty",
    "poem",
    "novel",
    "author",
    "language",
    "grammar",
    "code",
    "program",
    "loop",
    "array",
    "server",
    "network",
    "database",
    "query",
    "design",
    "model",
    "theory",
    "student",
    "teacher",
    "course",
    "session",
    "concept",
    "example",
    "value",
    "number",
    "rate",
    "ratio",
    "percent",
    "total",
    "each",
    "between",
    "after",
    "before",
    "during",
    "while",
    "because",
    "therefore",
    "however",
    "first",
    "second",
    "third",
    "final",
]


def iter_questions(n: int, seed: int = 0) -> Iterator[tuple[str, str]]:
    """(kind, question) one at a time: kind is "benchmark" (a planted item), "near" (a one-word
    edit of one of the last 1,000 questions) or "new". Memory: the last 1,000 questions."""
    from glan.post.benchmarks import KNOWN, load_benchmarks

    bench = [i.text for i in load_benchmarks(list(KNOWN)).items]
    rng = random.Random(seed)
    recent: deque[str] = deque(maxlen=1000)
    for i in range(n):
        r = rng.random()
        if r < 0.001:
            kind, text = "benchmark", "Answer the following question. " + rng.choice(bench)
        elif r < 0.021 and recent:
            words = recent[rng.randrange(max(0, i - 1000), i) - max(0, i - 1000)].split()
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
            kind, text = "near", " ".join(words)
        else:
            kind, text = "new", " ".join(rng.choices(VOCAB, k=rng.randint(20, 60))) + f" q{i}?"
        recent.append(text)
        yield kind, text


def questions(n: int, seed: int = 0) -> tuple[list[str], int, int]:
    out: list[str] = []
    planted = near = 0
    for kind, text in iter_questions(n, seed):
        out.append(text)
        planted += kind == "benchmark"
        near += kind == "near"
    return out, planted, near


def phase_decontaminate(n: int, workers: int) -> dict:
    from glan.post.benchmarks import KNOWN, load_benchmarks
    from glan.post.decontam import Decontaminator, ParallelChecker

    texts, planted, _ = questions(n)
    t = time.perf_counter()
    decon = Decontaminator(load_benchmarks(list(KNOWN)).items)
    index_s = time.perf_counter() - t
    checker = ParallelChecker(decon, workers)
    t = time.perf_counter()
    handles = [checker.submit(texts[i : i + 4096]) for i in range(0, n, 4096)]
    found = sum(hit is not None for h in handles for hit in ParallelChecker.result(h))
    dt = time.perf_counter() - t
    checker.close()
    return {
        "records_per_s": n / dt,
        "seconds": dt,
        "index_s": index_s,
        "found": found,
        "planted": planted,
        "benchmark_items": len(decon),
        "workers": workers,
    }


def phase_dedup(n: int) -> dict:
    from glan.post.dedup import Deduplicator

    texts, _, near = questions(n)
    dedup = Deduplicator(threshold=0.7)
    t = time.perf_counter()
    found = sum(dedup.check(str(i), text) is not None for i, text in enumerate(texts))
    dt = time.perf_counter() - t
    return {"records_per_s": n / dt, "seconds": dt, "found": found, "planted": near}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--phase", choices=["decontaminate", "dedup"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "decontaminate":
            row = phase_decontaminate(args.records, args.workers)
        else:
            row = phase_dedup(args.records)
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(row))
        return
    for phase in ("decontaminate", "dedup"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                phase,
                "--records",
                str(args.records),
                "--workers",
                str(args.workers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{phase:<14} {args.records:,} records in {row['seconds']:.1f} s = "
            f"{row['records_per_s']:,.0f} records/s; found {row['found']:,} "
            f"(planted {row['planted']:,}); peak RSS {row['peak_rss_mb']:.0f} MB"
            + (
                f"; {row['workers']} workers; index of {row['benchmark_items']:,} items "
                f"built in {row['index_s']:.1f} s"
                if phase == "decontaminate"
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
