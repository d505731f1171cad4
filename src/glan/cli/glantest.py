"""`glan test build`, `glan test check` and `glan test run`: GLAN-Test, the held-out exam, its
hold-out check against final training files, and its judge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from glan.cli.app import Opt, app, console, out
from glan.cli.generate import (
    BackendOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    KeyEnvOpt,
    ModelOpt,
    config_overrides,
    parse_sets,
)
from glan.errors import UserError
from glan.llm.settings import EMBEDDED_MODELS

test_app = typer.Typer(
    no_args_is_help=True, help="GLAN-Test: a held-out exam, graded by a judge model."
)
app.add_typer(test_app, name="test")

# Help text is Rich markup: "\\[" keeps a bracket.
SPEC = "KIND\\[:MODEL]\\[@BASE_URL]\\[,FIELD=VALUE...]: local:smollm2, openai:MODEL@URL"

SemanticOpt = Annotated[
    bool | None,
    Opt(
        "--semantic/--no-semantic",
        help="embedding checks of subjects and questions (default: when glan\\[semantic] is "
        "installed; --semantic requires it)",
        show_default=False,
    ),
]

SubjectTokenOpt = Annotated[
    float,
    Opt(help="Jaccard of two subject names' normalised word sets at which they are close"),
]
SubjectSemanticOpt = Annotated[
    float, Opt(help="cosine of two subject names' embeddings at which they are close")
]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, dict):
            flat[f"{prefix}{key}"] = value
    return flat


def exam_config(
    run_dir: Path | None, config: Path | None, overrides: dict[str, Any], labels: dict[str, str]
):
    """The run's own config (its manifest) under the CLI's overrides, so the exam is made by the
    run's models and sizes unless told otherwise; or the --config file, or the defaults.

    Not inherited: the concurrency (it shapes no record), and, when the endpoint is switched,
    the run's llm block and the sizes glan shrank for the embedded model (they fit that model,
    not the new one)."""
    import orjson

    from glan.config import load_config

    base: dict[str, Any] = {}
    if run_dir is not None and config is None:
        try:
            manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
        except (OSError, ValueError):
            raise UserError(
                f"{run_dir} holds no readable manifest.json: is it a glan run?"
            ) from None
        base = _flatten(manifest.get("config") or {})
        base.pop("concurrency", None)
        endpoint = ("llm.backend", "llm.model", "llm.base_url")
        if any(overrides.get(k) is not None for k in endpoint):
            embedded = base.get("llm.backend") == "local" and base.get("llm.model") in (
                None,
                *EMBEDDED_MODELS,
            )
            shrunk = ("syllabus.", "plan.subjects_per_call") if embedded else ()
            base = {k: v for k, v in base.items() if not k.startswith(("llm.", *shrunk))}
    given = {k: v for k, v in overrides.items() if v is not None}
    return load_config(config, {**base, **given}, labels)


@test_app.command("build")
def test_build(
    out_dir: Annotated[Path, Opt("--out", "-o", help="the exam directory (resumed if it exists)")],
    run_dir: Annotated[
        Path | None, typer.Argument(help="the run to hold the exam out from (omit with --taxonomy)")
    ] = None,
    per_discipline: Annotated[int, Opt(help="questions per discipline (paper: 50)")] = 50,
    per_subject: Annotated[int, Opt(help="questions per held-out subject at most")] = 5,
    taxonomy: Annotated[
        Path | None,
        Opt("--taxonomy", "-t", help="taxonomy YAML (default: the run's, else glan's own)"),
    ] = None,
    discipline: Annotated[
        list[str] | None, Opt(help="only this discipline (name or FIELD/SUBFIELD/NAME); repeat")
    ] = None,
    reference_model: Annotated[
        str | None, Opt(help=f"reference answers from this endpoint, kept apart ({SPEC})")
    ] = None,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config file")] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    seed: Annotated[int | None, Opt(help="seed (default: the run's)")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="any config key, dotted")] = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="show calls, tokens, cost; spend nothing")
    ] = False,
    semantic: SemanticOpt = None,
    semantic_threshold: Annotated[
        float,
        Opt(help="cosine at which a question is dropped as a paraphrase of a training question"),
    ] = 0.9,
    subject_token_threshold: SubjectTokenOpt = 0.75,
    subject_semantic_threshold: SubjectSemanticOpt = 0.9,
) -> None:
    """Make a held-out exam from subjects the run never used. Nor any too close to one: the
    same normalised name, most of the same words, a near embedding. Its questions are made by
    the run's stages and checked against the run's (exact, near and, with glan\\[semantic],
    paraphrased duplicates dropped and replaced)."""
    from glan.aio import run
    from glan.glantest.discipline import ExamSettings, select
    from glan.glantest.endpoints import parse_endpoint
    from glan.taxonomy import load_taxonomy

    if run_dir is not None and not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    overrides, labels = config_overrides(
        backend, model, base_url, api_key_env, concurrency, seed, set_
    )
    cfg = exam_config(run_dir, config, overrides, labels)
    if taxonomy is None and run_dir is not None:
        taxonomy = run_dir / "taxonomy.yaml"
    tax = load_taxonomy(taxonomy)
    try:
        settings = ExamSettings(per_discipline=per_discipline, per_subject=per_subject)
    except ValueError:
        raise UserError("--per-discipline and --per-subject must be at least 1") from None
    reference = parse_endpoint(reference_model) if reference_model else None
    holdout = holdout_settings(
        semantic,
        question_threshold=semantic_threshold,
        token_threshold=subject_token_threshold,
        subject_threshold=subject_semantic_threshold,
    )
    chosen = select(tax, discipline)
    if dry_run:
        from glan.cli.dry_run import print_estimates
        from glan.glantest.answer import max_tokens_for
        from glan.glantest.estimate import build_estimate

        rows = build_estimate(
            chosen, cfg, settings, reference, max_tokens_for(reference) if reference else 0
        )
        title = f"GLAN-Test exam: {per_discipline} questions x {len(chosen)} disciplines"
        print_estimates(title, rows, out)
        return
    from rich.progress import Progress

    from glan.glantest.build import build_exam

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("disciplines examined", total=len(chosen))
        m = run(
            build_exam(
                cfg,
                tax,
                out_dir,
                settings,
                run_dir,
                discipline,
                reference,
                on_discipline=lambda: bar.advance(task),
                holdout=holdout,
            )
        )
    _print_build(m, run_dir, out_dir)


# The option that sets each hold-out threshold (build and check name them alike).
THRESHOLD_OPTIONS = {
    "question_threshold": "--semantic-threshold",
    "paraphrase_threshold": "--semantic-threshold",
    "token_threshold": "--subject-token-threshold",
    "subject_threshold": "--subject-semantic-threshold",
}


def holdout_settings(semantic: bool | None, **thresholds: float):
    from pydantic import ValidationError

    from glan.glantest.holdout import HoldoutSettings

    try:
        return HoldoutSettings(semantic=semantic, **thresholds)
    except ValidationError as exc:
        option = THRESHOLD_OPTIONS.get(str(exc.errors()[0]["loc"][0]), "a threshold")
        raise UserError(f"{option}: must be in (0, 1]") from None


def _print_build(m: dict[str, Any], run_dir: Path | None, out_dir: Path) -> None:
    ov = m["overlap"]
    against = f"{ov['training_questions']:,} training questions" if run_dir else "no run"
    out.print(
        f"{m['counts']['items']:,} questions over {m['counts']['disciplines']} disciplines "
        f"({m['counts']['short']} short), checked against {against}: "
        f"{ov['found_with_training']} repeated a training question and "
        f"{ov['found_within_exam']} the exam itself (dropped and replaced); overlap after "
        f"filtering {ov['with_training_after_filtering']}; ${m['cost_usd']:.4f} -> "
        f"{out_dir / 'exam.jsonl'}",
        highlight=False,
        soft_wrap=True,
    )
    if run_dir is not None:
        held = m["held_out"]
        sem = ov.get("semantic")
        checks = (
            f"exact + MinHash + embeddings ({sem['model']}, cosine >= {sem['threshold']}): "
            f"{ov['found_semantic_with_training']} paraphrased a training question"
            if sem
            else "exact + MinHash only (no embedding check: glan[semantic] not installed, or "
            "--no-semantic)"
        )
        out.print(
            f"question checks: {checks}; subjects skipped as too close to the run's: "
            f"{held['listed_subjects_skipped_as_run_subjects']} "
            f"(checks: {', '.join(held['subject_checks'])})",
            highlight=False,
            soft_wrap=True,
        )
    refs = m.get("references")
    if refs:
        out.print(
            f"reference answers: {refs['answered']} answered, {refs['failed']} failed, "
            f"{refs['cut_at_token_limit']} cut at the token limit",
            highlight=False,
            soft_wrap=True,
        )


@test_app.command("run")
def test_run(
    test_dir: Annotated[Path, typer.Argument(help="the exam directory (glan test build)")],
    model: Annotated[
        list[str],
        Opt(help=f"LABEL=SPEC: twice, the two models; with --absolute, one or more ({SPEC})"),
    ],
    judge: Annotated[str, Opt(help=f"the judge's endpoint ({SPEC})")],
    out_dir: Annotated[
        Path | None,
        Opt("--out", "-o", help="results (default: TEST_DIR/results/A-vs-B, or absolute-A-B-C)"),
    ] = None,
    absolute: Annotated[
        bool,
        Opt(
            "--absolute",
            help="score each answer alone, 1-10, any number of models, the first the baseline",
        ),
    ] = False,
    concurrency: Annotated[int, Opt(help="exam items in flight")] = 8,
    answer_max_tokens: Annotated[
        int | None, Opt(help="cap on each answer (default 1024; 384 on smollm2)")
    ] = None,
    judge_max_tokens: Annotated[int, Opt(help="cap on each judge reply")] = 512,
    references: Annotated[
        bool, Opt("--references/--no-references", help="show the judge the reference answers")
    ] = True,
    bootstrap: Annotated[int, Opt(help="bootstrap resamples for the intervals")] = 2000,
    seed: Annotated[int, Opt(help="bootstrap seed")] = 0,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config (for prices)")] = None,
    set_: Annotated[
        list[str] | None, Opt("--set", help="e.g. --set prices.gpt-4o.input=2.5")
    ] = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="show calls, tokens, cost; spend nothing")
    ] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Grade two models on the exam with a judge. Each answers every question and the judge
    scores both answers 1-10 in both orders (--absolute: each answer alone, for any number of
    models): report.html, report.json and report.md (re-running resumes)."""
    from glan.aio import run
    from glan.config import load_config
    from glan.glantest.endpoints import parse_endpoint, parse_labelled
    from glan.glantest.exam import read_exam, read_references
    from glan.glantest.grade import GradeSettings, grade, results_name

    models = parse_labelled(model)
    labels = _labels(models, absolute)
    judge_settings = parse_endpoint(judge)
    sets = parse_sets(set_ or [])
    prices = load_config(config, sets, {k: f"--set {k}" for k in sets}).prices
    try:
        settings = GradeSettings(
            concurrency=concurrency,
            answer_max_tokens=answer_max_tokens,
            judge_max_tokens=judge_max_tokens,
            use_references=references,
            bootstrap=bootstrap,
            seed=seed,
            absolute=absolute,
        )
    except ValueError as exc:
        raise UserError(f"invalid option: {str(exc).splitlines()[-1].strip()}") from None
    target = out_dir or test_dir / "results" / results_name(labels, absolute)
    if dry_run:
        from glan.cli.dry_run import print_estimates
        from glan.glantest.estimate import grading_estimate

        items = read_exam(test_dir)
        rows = grading_estimate(
            items,
            models,
            judge_settings,
            {label: settings.answer_tokens(s) for label, s in models.items()},
            judge_max_tokens,
            read_references(test_dir) if references else {},
            prices,
            absolute,
        )
        title = f"GLAN-Test grading: {len(items):,} questions, {_versus(labels, absolute)}"
        print_estimates(title, rows, out)
        return
    items_total = len(read_exam(test_dir))
    from rich.progress import Progress

    with Progress(console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("answering and judging", total=items_total)
        report = run(
            grade(
                test_dir,
                models,
                judge_settings,
                target,
                settings,
                prices,
                on_item=lambda: bar.advance(task),
            )
        )
    from glan.glantest.report import markdown
    from glan.glantest.report_absolute import absolute_markdown

    shown = (absolute_markdown if absolute else markdown)(report, disciplines=False)
    out.print(shown, highlight=False, soft_wrap=True)
    out.print(
        f"per discipline and plots: report.md, report.html, report.json in {target}",
        highlight=False,
        soft_wrap=True,
    )


def _labels(models: dict[str, Any], absolute: bool) -> list[str]:
    from glan.glantest.grade import check_absolute_labels, check_labels

    return list(check_absolute_labels(models) if absolute else check_labels(models))


def _versus(labels: list[str], absolute: bool) -> str:
    return f"{', '.join(labels)} scored alone" if absolute else " vs ".join(labels)
