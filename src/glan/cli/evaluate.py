"""`glan eval`: base vs tuned on the paper's benchmarks, and the leakage check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from glan.cli.app import Opt, app, console, fail, out
from glan.evaluate.registry import DEFAULT, Benchmark


@app.command("eval")
def eval_(
    model: Annotated[
        list[str], Opt(help="LABEL=PATH_OR_ID or PATH_OR_ID; repeat to compare (base first)")
    ],
    benchmarks: Annotated[str, Opt(help="comma-separated benchmark names")] = DEFAULT,
    limit: Annotated[int | None, Opt(help="first N items of each benchmark")] = None,
    out_dir: Annotated[Path, Opt("--out", help="where results and task YAMLs go")] = Path("eval"),
    shots: Annotated[
        int | None, Opt(help="few-shot examples (default: per benchmark; HumanEval, IFEval stay 0)")
    ] = None,
    allow_code_execution: Annotated[
        bool, Opt("--allow-code-execution", help="run HumanEval/MBPP code in the sandbox")
    ] = False,
    chat_template: Annotated[
        bool, Opt("--chat-template", help="wrap prompts in the model's chat template")
    ] = False,
    max_gen_toks: Annotated[int | None, Opt(help="cap on generated tokens per item")] = None,
    batch_size: Annotated[int, Opt(help="items per forward pass")] = 8,
    backend: Annotated[str, Opt(help="hf, vllm, or auto (vllm on a GPU when installed)")] = "auto",
    leakage: Annotated[
        bool, Opt("--leakage", help="run the leakage check instead (needs --train-data)")
    ] = False,
    train_data: Annotated[Path | None, Opt(help="the run or export the model was tuned on")] = None,
    leakage_items: Annotated[int, Opt(help="test items and training pairs per benchmark")] = 100,
) -> None:
    r"""Evaluate models with lm-evaluation-harness (glan\[eval]). Offline, from local benchmark
    data; every benchmark is reported as run, skipped (why) or failed (why)."""
    from glan.evaluate.runner import EvalSettings, evaluate, parse_benchmarks, parse_models

    chosen = parse_benchmarks(benchmarks)
    models = parse_models(model)
    if leakage:
        if train_data is None:
            fail("--leakage needs --train-data RUN_DIR (the data the model was tuned on)")
        _leakage(models, chosen, train_data, out_dir, leakage_items)
        return
    settings = EvalSettings(
        limit=limit,
        shots=shots,
        allow_code_execution=allow_code_execution,
        chat_template=chat_template,
        max_gen_toks=max_gen_toks,
        batch_size=batch_size,
        backend=backend,
    )
    from glan.evaluate.results import rich_table

    report = evaluate(models, chosen, out_dir, settings)
    out.print(rich_table(report))
    out.print(
        f"eval_results.json, eval_results.md and eval_report.html in {out_dir}", highlight=False
    )


def _leakage(
    models: dict[str, str], chosen: list[Benchmark], train_data: Path, out_dir: Path, items: int
) -> None:
    from rich.table import Table

    from glan.evaluate import leakage as lk

    for label, path in models.items():
        rows = lk.check(path, train_data, chosen, items)
        lk.write(rows, out_dir / f"leakage-{label}", path)
        table = Table(title=f"leakage check: {label} (test loss - train loss)")
        for name in ("benchmark", "items", "test loss", "train loss", "gap", "reading"):
            table.add_column(name)
        for r in rows:
            if r.status != "run":
                table.add_row(r.benchmark, "", "", "", "", f"skipped: {r.reason}")
                continue
            reading = "[red]WARNING: test items look learnt[/]" if r.warning else "clean"
            table.add_row(
                r.benchmark,
                str(r.items),
                f"{r.test_loss:.3f}",
                f"{r.train_loss:.3f}",
                f"{r.gap:+.3f}",
                reading,
            )
        out.print(table)
    console.print(
        f"paper's clean model: gaps -0.03..+0.02; warning below {lk.WARN_BELOW}. Read the model "
        "tuned on --train-data: for any other, the gap only says which set is harder. "
        f"Results in {out_dir}/leakage-*/leakage.json",
        highlight=False,
    )
