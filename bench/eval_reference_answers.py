"""lm-eval's MATH-500, HumanEval and MBPP tasks on glan's local data, answered by a stand-in model
with each item's own reference (the solution's boxed answer, the canonical program) and with a
wrong one: how far the data, lm-eval's scoring and glan's sandbox agree, on the full sets, and
how long the scoring takes.

    python bench/eval_reference_answers.py [--limit N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from glan.evaluate import runner
from glan.testing.oracle_lm import OracleLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    runner._lm = lambda path, settings: OracleLM(path)  # "right" or "wrong"
    chosen = runner.parse_benchmarks("math500,humaneval,mbpp")
    settings = runner.EvalSettings(limit=args.limit, allow_code_execution=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = runner.evaluate({"right": "right", "wrong": "wrong"}, chosen, Path(out), settings)
    for r in report.results:
        print(r.benchmark, r.status, r.reason, r.metric, r.samples, r.scores)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
