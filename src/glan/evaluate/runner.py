"""lm-evaluation-harness over each model and benchmark; one benchmark's failure is reported, not
raised, so that the table always names every benchmark asked for."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import glan
from glan.benchmark_packages import punkt_tab_home, why_missing
from glan.errors import UserError
from glan.evaluate import per_item
from glan.evaluate import provenance as prov
from glan.evaluate import results as res
from glan.evaluate.answer_loss import free_memory
from glan.evaluate.code_eval import sandboxed_code_eval
from glan.evaluate.paired import BOOTSTRAP_ITERS, BOOTSTRAP_SEED, compare, judge
from glan.evaluate.progress import LOADING, EvalSteps, lm_eval_counted
from glan.evaluate.registry import BENCHMARKS, Benchmark, how_to_get, offline
from glan.evaluate.sandbox import code_execution_allowed
from glan.evaluate.standard import STANDARD, write_standard
from glan.train.models import require, resolve_model

FIXED_SHOTS = ("code", "instructions")
# lm-eval 0.4.13's default, passed and recorded so that another lm-eval's cannot change a rerun
# (it matters only with --chat-template: few-shot examples as earlier turns of the chat).
FEWSHOT_AS_MULTITURN = True  # their tasks fix their own examples (or none)
# lm-eval's own defaults, passed and recorded so that a rerun uses the same.
LM_EVAL_SEEDS = {
    "random_seed": 0,
    "numpy_random_seed": 1234,
    "torch_random_seed": 1234,
    "fewshot_random_seed": 1234,
}


@dataclass
class EvalSettings:
    limit: int | None = None
    shots: int | None = None  # None: each benchmark's own
    allow_code_execution: bool = False
    chat_template: bool = False
    max_gen_toks: int | None = None
    batch_size: int = 8
    backend: str = "auto"  # hf, vllm, auto (vllm when installed and a GPU is there)


@dataclass
class Planned:
    bench: Benchmark
    task: str | None  # lm-eval task name, None when not runnable
    result: res.BenchmarkResult
    local: bool = False  # lm-eval's own task over local data (else its hub task, or none)
    items: dict[str, dict[per_item.ItemKey, float]] = field(default_factory=dict)  # per model


def parse_models(specs: list[str]) -> dict[str, str]:
    """`LABEL=PATH` or `PATH` (labelled by its last path part)."""
    models: dict[str, str] = {}
    for spec in specs:
        label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        label = label or Path(path.rstrip("/")).name or path
        if label in models:
            label = f"{label}-{len(models) + 1}"
        models[label] = path
    return models


def check_models(models: dict[str, str]) -> None:
    """glan[eval] is installed and every model given as a local path is there (one line each,
    before anything is fetched or loaded); hub ids are left to transformers."""
    require("eval")
    for label, name in models.items():
        path = Path(name).expanduser()
        if not path.exists() and (name.startswith((".", "/", "~")) or path.suffix == ".gguf"):
            raise UserError(f"model not found: {label}={name}")


def parse_benchmarks(text: str) -> list[Benchmark]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(
            f"unknown benchmark {', '.join(unknown)}: known are {', '.join(BENCHMARKS)}"
        )
    return [BENCHMARKS[n] for n in names]


def plan(benchmarks: list[Benchmark], settings: EvalSettings, tasks_dir: Path) -> list[Planned]:
    planned = []
    for bench in benchmarks:
        fixed = bench.kind in FIXED_SHOTS
        shots = bench.shots if settings.shots is None or fixed else settings.shots
        result = res.BenchmarkResult(
            benchmark=bench.name,
            status="run",
            metric=bench.metric,
            shots=shots,
            prompt=bench.prompt,
        )
        blocked = _not_allowed(bench, settings)
        if blocked:
            result.status, result.reason = "skipped", blocked
            planned.append(Planned(bench, None, result))
            continue
        try:
            standard = write_standard(tasks_dir, bench.name)
        except Exception as exc:
            result.status, result.reason = "failed", f"writing its task: {_one_line(exc)}"
            planned.append(Planned(bench, None, result))
            continue
        if standard:
            task, items = standard
            std = STANDARD[bench.name]
            result.metric = std.metric
            result.shots = std.shots if settings.shots is None or fixed else settings.shots
            result.prompt = f"lm-eval's {std.task}"
            result.source = f"local ({items} items), lm-eval's own task"
        elif offline():
            result.status, result.reason = "skipped", how_to_get(bench)
            task = None
        else:
            task, result.source = bench.hub_task, "lm-eval hub task"
            result.prompt = f"lm-eval {bench.hub_task}"
        planned.append(Planned(bench, task, result, local=standard is not None))
    return planned


def _not_allowed(bench: Benchmark, settings: EvalSettings) -> str | None:
    if bench.kind == "code" and not code_execution_allowed(settings.allow_code_execution):
        return "runs model-written code: pass --allow-code-execution (or HF_ALLOW_CODE_EVAL=1)"
    if bench.kind == "instructions":
        return ifeval_checker_missing()
    return None


def ifeval_checker_missing() -> str | None:
    """Why lm-eval's IFEval checker cannot run here, or None. It needs NLTK's punkt_tab data,
    which NLTK downloads from GitHub on first use; glan fetches a copy from the package
    registry (llama-index-core's) and puts it on NLTK's path."""
    if any(importlib.util.find_spec(m) is None for m in ("langdetect", "immutabledict", "nltk")):
        return "IFEval's checker needs: pip install 'lm-eval[ifeval]'"
    import nltk

    home = punkt_tab_home()
    if home is not None and str(home) not in nltk.data.path:
        nltk.data.path.append(str(home))
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        return (
            f"IFEval's checker needs NLTK's punkt_tab: {why_missing('llama_index')} "
            "(or: python -m nltk.downloader punkt_tab)"
        )
    return None


def backend(settings: EvalSettings) -> tuple[str, str]:
    """(hf or vllm, cpu or cuda): what --backend resolves to on this machine."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    use_vllm = settings.backend == "vllm" or (
        settings.backend == "auto" and device == "cuda" and importlib.util.find_spec("vllm")
    )
    return ("vllm" if use_vllm else "hf"), device


def _lm(path: str, settings: EvalSettings) -> Any:
    name, device = backend(settings)
    if name == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=path, batch_size="auto")
    from glan.evaluate.bounded_lm import BoundedHFLM

    return BoundedHFLM(pretrained=path, batch_size=settings.batch_size, device=device)


def _count(output: dict[str, Any], task: str) -> int | None:
    """The items a task or group scored (a group's: all its tasks')."""
    counts = output.get("n-samples", {})
    samples = counts.get(task, {}).get("effective")
    if samples is None and counts:
        samples = sum(c.get("effective", 0) for c in counts.values())
    return samples


def _shots(output: dict[str, Any], task: str, asked: int | None) -> int | None:
    """The shots lm-eval used (a group's, when all its tasks agree), so that the table shows
    what ran rather than what was asked."""
    counts = output.get("n-shot", {})
    used = {counts[task]} if task in counts else set(counts.values())
    return int(used.pop()) if len(used) == 1 else asked


def _quiet_lm_eval() -> None:
    """lm-eval asks git for its own commit from the working directory, and outside a
    repository git prints "fatal: not a git repository" on the user's terminal. Hugging Face
    datasets draws a bar for each local file it turns into a table, a blink each."""
    import datasets
    import lm_eval.evaluator
    import lm_eval.loggers.utils

    datasets.disable_progress_bars()

    lm_eval.evaluator.get_git_commit_hash = lambda: None
    lm_eval.loggers.utils.get_git_commit_hash = lambda: None


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if any(c.isalnum() for c in line)]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _asked_shots(item: Planned, settings: EvalSettings) -> int | None:
    """The shots to ask lm-eval for: --shots where it applies, else the convention where the
    task's own default differs (MMLU's is 0; 5 is the usual), else None: the task's own,
    without lm-eval's warning that it overrides them with the same number."""
    if item.bench.kind in FIXED_SHOTS:
        return None
    if settings.shots is not None:
        return settings.shots
    std = STANDARD.get(item.bench.name)
    if std is not None and item.local:
        return std.shots if std.shots_differ_from_tasks else None
    return item.result.shots


def _run_task(lm: Any, item: Planned, manager: Any, settings: EvalSettings) -> dict[str, Any]:
    """One lm-eval task on one model; HumanEval's and MBPP's code runs in glan's sandbox."""
    from lm_eval import simple_evaluate

    allowed = code_execution_allowed(settings.allow_code_execution)
    gen_kwargs = {"max_gen_toks": settings.max_gen_toks} if settings.max_gen_toks else None
    with sandboxed_code_eval(allowed):
        return simple_evaluate(
            model=lm,
            tasks=[item.task],
            num_fewshot=_asked_shots(item, settings),
            limit=settings.limit,
            task_manager=manager,
            apply_chat_template=settings.chat_template,
            fewshot_as_multiturn=FEWSHOT_AS_MULTITURN,
            confirm_run_unsafe_code=allowed,
            bootstrap_iters=0,  # glan measures the base-vs-tuned difference itself (paired)
            log_samples=True,
            gen_kwargs=gen_kwargs,
            **LM_EVAL_SEEDS,
        )


def _run_and_record(
    lm: Any, item: Planned, label: str, manager: Any, settings: EvalSettings, out_dir: Path
) -> dict[str, Any]:
    """One task on one model, recorded; lm-eval's config of the run. Its output (every sample,
    with its document) goes out of scope here rather than lingering into the next task."""
    output = _run_task(lm, item, manager, settings)
    _record(item, label, output, out_dir)
    return output.get("config", {})


def _file_name(label: str) -> str:
    """A folder name for a model's label: the label where it is one, else its safe characters
    and a hash of the label, so that labels such as "a/b" and "a_b" never share a folder."""
    safe = re.sub(r"[^\w.-]", "_", label)
    if safe == label and label not in ("", ".", ".."):
        return label
    return f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def _record(item: Planned, label: str, output: dict[str, Any], out_dir: Path) -> None:
    """Every metric lm-eval reported, the headline one as the score, the per-sample records on
    disk and the headline's per-item scores for the comparison."""
    assert item.task is not None
    result = item.result
    metrics = per_item.all_metrics(output, item.task)
    key = per_item.headline(metrics, result.metric)
    result.headline, result.metrics[label] = key, metrics
    result.scores[label] = metrics[key]
    result.samples = _count(output, item.task)
    result.shots = _shots(output, item.task, result.shots)
    path = out_dir / "samples" / _file_name(label) / f"{result.benchmark}.jsonl.gz"
    per_item.write_samples(output, path)
    result.samples_files[label] = path.relative_to(out_dir).as_posix()
    item.items[label] = per_item.output_item_scores(output, key)
    if result.provenance is None:
        versions = output.get("versions", {})
        if item.local:
            result.provenance = prov.task(result.benchmark, item.task, out_dir, versions)
        else:
            result.provenance = prov.TaskProvenance(task=item.task, versions=versions)


def _compare(planned: list[Planned], labels: list[str]) -> None:
    """Each later model against the first on the items both were scored on; Holm across every
    (pair, benchmark) test of the run, so that more models do not mean more chances."""
    compared = []
    for tuned in labels[1:]:
        for item in planned:
            result = item.result
            if result.status != "run" or not {labels[0], tuned} <= item.items.keys():
                continue
            base_items, tuned_items = item.items[labels[0]], item.items[tuned]
            base, ours = per_item.paired(base_items, tuned_items)
            note = _unpaired(result, labels[0], base, ours, len(base_items), len(tuned_items))
            if note:
                note = f"{tuned}: {note}" if len(labels) > 2 else note
                result.paired_note = "; ".join(filter(None, [result.paired_note, note]))
                continue
            compared.append(compare(labels[0], tuned, base, ours))
            result.comparisons.append(compared[-1])
    judge(compared)


def _unpaired(
    result: res.BenchmarkResult,
    label: str,
    base: list[float],
    tuned: list[float],
    n_base: int,
    n_tuned: int,
) -> str:
    """Why a benchmark's items give no paired comparison, or ""."""
    if not base:
        return "no item scored for both models: no paired comparison"
    if n_base != n_tuned or len(base) != n_base:
        return f"the models were scored on different items ({n_base}, {n_tuned}): not compared"
    if not all(math.isfinite(v) for v in (*base, *tuned)):
        return "some item scores are not numbers (NaN or infinite): not compared"
    score = result.scores.get(label)
    if score is None or not math.isclose(sum(base) / len(base), score, abs_tol=1e-9):
        return "its per-item scores do not average to lm-eval's score: not compared"
    return ""


def evaluate(
    models: dict[str, str],
    benchmarks: list[Benchmark],
    out_dir: Path,
    settings: EvalSettings,
    steps: EvalSteps | None = None,
) -> res.EvalReport:
    """Every benchmark on every model, one model loaded at a time (each freed before the next
    loads); `steps` hears each model's loading and each benchmark as it runs."""
    require("eval")
    from lm_eval.tasks import TaskManager

    tasks_dir = out_dir / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(benchmarks, settings, tasks_dir)
    # lm-eval's own index (some 14,000 task files, 10-30 s to read) is needed only for a
    # task named from it; the local copies' tasks include their lm-eval files by path.
    hub_tasks = any(p.task and not p.local for p in planned)
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=hub_tasks)
    _quiet_lm_eval()
    steps = steps if steps is not None else EvalSteps()
    steps.plan("eval", list(models), [p.result.benchmark for p in planned if p.task])
    model_records = {}
    for label, name in models.items():
        with steps.step("eval", label, LOADING, unit=""):
            resolved = resolve_model(name)
            lm = _lm(resolved, settings)
        lm_eval_config: dict[str, Any] = {}
        for item in planned:
            if item.task is None:
                continue
            with steps.step("eval", label, item.result.benchmark) as step, lm_eval_counted(step):
                try:
                    lm_eval_config = _run_and_record(lm, item, label, manager, settings, out_dir)
                except Exception as exc:  # one benchmark failing must not hide the others
                    item.result.scores[label] = None
                    item.result.status = "failed"
                    item.result.reason = f"{label}: {_one_line(exc)}"
        template = getattr(getattr(lm, "tokenizer", None), "chat_template", None)
        model_records[label] = prov.model(
            name,
            resolved,
            lm_eval_config,
            *backend(settings),
            template if isinstance(template, str) else None,
        )
        del lm  # the next model loads only once this one is gone
        free_memory()
    _compare(planned, list(models))
    report = res.EvalReport(
        models=models,
        limit=settings.limit,
        chat_template=settings.chat_template,
        results=[p.result for p in planned],
        provenance=prov.RunProvenance(
            glan_version=glan.__version__,
            lm_eval_version=prov.version("lm_eval"),
            versions=prov.environment(),
            machine=prov.machine(),
            finished_utc=prov.now_utc(),
            settings=asdict(settings)
            | {"bootstrap_iters": BOOTSTRAP_ITERS, "fewshot_as_multiturn": FEWSHOT_AS_MULTITURN},
            seeds=LM_EVAL_SEEDS | {"bootstrap_seed": BOOTSTRAP_SEED},
            benchmarks=[b.name for b in benchmarks],
            models=model_records,
        ),
    )
    res.write(report, out_dir)
    return report
