"""Functions lm-eval calls from the task YAMLs glan writes (`!function glan_hooks.NAME`)."""

from __future__ import annotations

from typing import Any

from glan.evaluate.sandbox import run_program


def humaneval_pass(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """pass@1 with greedy decoding: the completion passes the item's own tests in the sandbox."""
    program = (
        doc["prompt"] + results[0] + "\n\n" + doc["test"] + f"\n\ncheck({doc['entry_point']})\n"
    )
    return {"pass@1": float(run_program(program).passed)}


IFEVAL_METRICS = ("prompt_level_strict_acc", "prompt_level_loose_acc")


def ifeval_scores(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's own IFEval checker (needs lm-eval[ifeval]), prompt-level accuracies."""
    from lm_eval.tasks.ifeval.utils import process_results

    scores = process_results(doc, results)
    return {name: float(scores[name]) for name in IFEVAL_METRICS}
