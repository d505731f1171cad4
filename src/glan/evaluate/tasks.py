"""lm-eval task YAMLs over local data, written into EVAL_DIR/tasks at run time so that a run can
be repeated with lm-eval's own CLI (`lm_eval --include_path EVAL_DIR/tasks --tasks glan_gsm8k`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from glan.evaluate.registry import Benchmark, Doc
from glan.run.files import atomic_write_bytes, atomic_write_text

HOOKS = "glan_hooks.py"
ANSWER_CLEANUP = [",", "\\$", "(?s).*#### ", "\\.$"]  # compare final answers, not reasoning


def _generate(bench: Benchmark) -> dict[str, Any]:
    return {
        "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "generation_kwargs": {
            "until": ["Question:", "\n\n\n", "<|im_end|>", "</s>"],
            "do_sample": False,
            "max_gen_toks": 256,
        },
        "filter_list": [
            {
                "name": "flexible-extract",
                "filter": [
                    {
                        "function": "regex",
                        "group_select": -1,
                        "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)",
                    },
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "regexes_to_ignore": ANSWER_CLEANUP,
            }
        ],
    }


def _multiple_choice(bench: Benchmark) -> dict[str, Any]:
    letters = "{% for c in choices %}{{ 'ABCD'[loop.index0] }}. {{ c }}\n{% endfor %}"
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}\n" + letters + "Answer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def _code(bench: Benchmark) -> dict[str, Any]:
    return {
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{test}}",
        "generation_kwargs": {
            "until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"],
            "do_sample": False,
            "max_gen_toks": 512,
        },
        "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
    }


def _instructions(bench: Benchmark) -> dict[str, Any]:
    return {
        "output_type": "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": 0,
        "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": 1280},
        "metric_list": [
            {"metric": name, "aggregation": "mean", "higher_is_better": True}
            for name in ("prompt_level_strict_acc", "prompt_level_loose_acc")
        ],
    }


BUILDERS = {
    "generate": _generate,
    "multiple_choice": _multiple_choice,
    "code": _code,
    "instructions": _instructions,
}
HOOK_FOR = {"code": "humaneval_pass", "instructions": "ifeval_scores"}


def write_task(
    tasks_dir: Path, bench: Benchmark, docs: list[Doc], shots: int, max_gen_toks: int | None
) -> str:
    """Writes the data file and the YAML; returns the lm-eval task name."""
    name = f"glan_{bench.name}"
    data = tasks_dir / "data" / f"{bench.name}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(data, b"".join(orjson.dumps(d) + b"\n" for d in docs))
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "fewshot_split": "test",  # only a test split is local; lm-eval leaves the item itself out
        "num_fewshot": shots,
        **BUILDERS[bench.kind](bench),
        "metadata": {"version": 1.0, "source": "glan"},
    }
    if max_gen_toks and "generation_kwargs" in config:
        config["generation_kwargs"]["max_gen_toks"] = max_gen_toks
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    if bench.kind in HOOK_FOR:
        text += f"process_results: !function glan_hooks.{HOOK_FOR[bench.kind]}\n"
        atomic_write_text(tasks_dir / HOOKS, "from glan.evaluate.hooks import *  # noqa\n")
    atomic_write_text(tasks_dir / f"{name}.yaml", text)
    return name
