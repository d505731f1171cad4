"""Where `glan eval`'s time and memory go: seconds and peak resident memory per model and
benchmark (each model's loading apart), for the lm-eval run and the leakage test.

Each of the two runs goes in a child process of its own, so that neither inherits the other's
memory. The child follows glan's own progress steps (glan.evaluate.progress) and, as each step
begins, resets the kernel's high-water mark of its resident memory (/proc/self/clear_refs, Linux);
the mark read as the step ends is that step's peak. "between steps" is the rest: task files,
lm-eval's task index, the comparison. Models default to the SmolLM2-135M that glan ships, twice
(base and a second label, as base and tuned are run), so that two 135M models are loaded in turn.

    python bench/eval_cost.py [--limit 2] [--benchmarks arc_challenge,gsm8k,mmlu]
        [--model smollm2-135m ...] [--leakage-items 20] [--max-gen-toks 64] [--no-leakage]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STATUS = Path("/proc/self/status")


def peak_mb() -> float:
    """The process's resident high-water mark since the last reset, in MB."""
    kb = re.search(r"VmHWM:\s+(\d+)", STATUS.read_text())
    return int(kb.group(1)) / 1024 if kb else float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class Meter:
    """A listener of glan's eval steps: each step's seconds and peak RSS, and the rest's."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.between, self.started = 0.0, time.monotonic()
        reset_peak()

    def __call__(self, event: str, phase: str, model: str, benchmark: str) -> None:
        peak, now = peak_mb(), time.monotonic()
        if event == "begin":
            self.between = max(self.between, peak)
        else:
            self.rows.append(
                {
                    "phase": phase,
                    "model": model,
                    "benchmark": benchmark,
                    "seconds": now - self.started,
                    "peak_mb": peak,
                }
            )
        self.started = now
        reset_peak()

    def finish(self) -> list[dict[str, Any]]:
        self.between = max(self.between, peak_mb())
        return [
            *self.rows,
            {"phase": "", "model": "", "benchmark": "between steps", "peak_mb": self.between},
        ]


def child(args: argparse.Namespace) -> None:
    from glan.evaluate.progress import EvalSteps

    meter = Meter()
    steps = EvalSteps(listeners=(meter,))
    models = dict(m.split("=", 1) for m in args.model)
    out = Path(args.out)
    if args.child == "eval":
        from glan.evaluate.runner import EvalSettings, evaluate, parse_benchmarks

        settings = EvalSettings(limit=args.limit, max_gen_toks=args.max_gen_toks)
        evaluate(models, parse_benchmarks(args.benchmarks), out / "eval", settings, steps)
    else:
        from glan.evaluate.leakage import check

        check(models, args.benchmarks.split(","), args.leakage_items, steps=steps)
    print(json.dumps(meter.finish()))


def run_child(kind: str, args: argparse.Namespace, out: Path) -> tuple[list[dict[str, Any]], float]:
    command = [sys.executable, __file__, "--child", kind, "--out", str(out)]
    command += ["--limit", str(args.limit), "--benchmarks", args.benchmarks]
    command += ["--leakage-items", str(args.leakage_items)]
    command += ["--max-gen-toks", str(args.max_gen_toks)]
    for model in args.model:
        command += ["--model", model]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the {kind} child failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--benchmarks", default="arc_challenge,gsm8k,mmlu")
    parser.add_argument("--model", action="append", help="LABEL=PATH_OR_ID (repeat)")
    parser.add_argument("--leakage-items", type=int, default=20)
    parser.add_argument("--max-gen-toks", type=int, default=64)
    parser.add_argument("--no-leakage", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--child", choices=("eval", "leakage"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model or ["base=smollm2-135m", "again=smollm2-135m"]
    if args.child:
        child(args)
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="eval-cost-"))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    kinds = ["eval"] if args.no_leakage else ["eval", "leakage"]
    print("| run | model | benchmark | seconds | peak RSS (MB) |\n|---|---|---|---:|---:|")
    for kind in kinds:
        rows, wall = run_child(kind, args, out)
        for r in rows:
            seconds = f"{r['seconds']:.1f}" if "seconds" in r else ""
            print(f"| {kind} | {r['model']} | {r['benchmark']} | {seconds} | {r['peak_mb']:,.0f} |")
        whole = max(r["peak_mb"] for r in rows)
        print(f"| {kind} | all | (process, start to end) | {wall:.1f} | {whole:,.0f} |")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
