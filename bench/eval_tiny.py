"""Base vs tuned on the tiny model, every benchmark: `glan eval` and its leakage test end to end.

A random-initialised Llama (glan.testing.tiny_model) is the base; `glan train` tunes it on 64
arithmetic pairs; then `glan eval` runs every default benchmark on both (offline, from the local
copies the first run fetches) and `glan eval --leakage` the paper's leakage test. The scores of
a random 3M model are noise: what this shows is that every benchmark is run, skipped or failed,
and why, and how long each step takes. Writes eval_results.md and leakage.json under --out and
prints the timings.

    python bench/eval_tiny.py --out /tmp/eval-tiny [--limit 2] [--leakage-items 50]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from glan.cli import app
from glan.testing.tiny_model import make_tiny_llama, write_pairs_run
from glan.train.recipe import Recipe
from glan.train.trainer import train

RECIPE = {  # the test suite's: a random 3M model needs a large step to move in 8 steps
    "epochs": 1,
    "learning_rate": 3e-3,
    "pairs_per_step": 8,
    "per_device_batch": 8,
    "max_seq_len": 128,
    "save_steps": 4,
}


def _glan(args: list[str]) -> float:
    started = time.perf_counter()
    result = CliRunner().invoke(app, args)
    print(result.output)
    if result.exit_code != 0:
        raise SystemExit(f"glan {' '.join(args[:1])} failed: {result.exit_code}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--max-gen-toks", type=int, default=32)
    parser.add_argument("--leakage-items", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out: Path = args.out
    base = make_tiny_llama(out / "base")
    run = write_pairs_run(out / "run", 64)
    started = time.perf_counter()
    tuned = train(run, str(base), out / "tuned", Recipe(**RECIPE)).out_dir
    trained = time.perf_counter() - started
    models = ["--model", f"base={base}", "--model", f"tuned={tuned}"]
    evaluate = ["--limit", str(args.limit), "--max-gen-toks", str(args.max_gen_toks)]
    evaluated = _glan(
        ["eval", *models, *evaluate, "--allow-code-execution", "--out", str(out / "eval")]
    )
    leakage = ["--leakage", "--leakage-items", str(args.leakage_items), "--train-data", str(run)]
    leak = _glan(["eval", *models, *leakage, "--out", str(out / "eval")])
    print(f"train {trained:.0f} s, eval {evaluated:.0f} s, leakage {leak:.0f} s")
    print((out / "eval" / "eval_results.md").read_text())
    print(_leakage_markdown(out / "eval" / "leakage" / "leakage.json"))


def _leakage_markdown(path: Path) -> str:
    rows = json.loads(path.read_text())["rows"]
    lines = ["| benchmark | model | n | loss test | loss train | gap | gap % |", "|---" * 7 + "|"]
    for r in rows:
        if r["status"] != "run":
            if r["model"] == rows[0]["model"]:
                lines.append(f"| {r['benchmark']} | skipped: {r['reason']} | | | | | |")
            continue
        split = "" if r["train_split"] == "train" else f" ({r['train_split']})"
        lines.append(
            f"| {r['benchmark']} | {r['model']} | {r['items']} | {r['test_loss']:.3f} "
            f"| {r['train_loss']:.3f}{split} | {r['gap']:+.3f} | {r['gap_pct']:+.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
