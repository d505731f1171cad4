"""`glan clean`, `glan decontaminate`, `glan export`, `glan report`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, app, console, error_line, fail, out, plural
from glan.errors import UserError

Quiet = Annotated[bool, Opt("--quiet", "-q", help="no progress display")]


def _benchmark_list(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


def say(message: str) -> None:
    """Print exactly `message`: hints like pip install 'glan[hf]' keep their brackets."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """A UserError becomes one unstyled line on stderr and exit 2."""
    try:
        yield
    except UserError as exc:
        error_line(str(exc))  # here too, so CliRunner-driven callers see the same one line
        raise typer.Exit(exc.exit_code) from None


@contextmanager
def progress(quiet: bool) -> Iterator:
    """The steps a long command reports, shown while the block runs (glan.cli.progress)."""
    from glan.cli.progress import show_steps
    from glan.post.progress import Steps

    steps = Steps()
    with show_steps(steps, console, quiet):
        yield steps


@app.command()
def clean(
    run_dir: Annotated[Path, typer.Argument(help="a run's output directory")],
    benchmarks: Annotated[
        str | None,
        Opt(
            help="comma-separated: known names, files PATH[:FIELD], hf:REPO:CONFIG:SPLIT:FIELD; "
            "each named one must load (default: gsm8k,mmlu,humaneval,ifeval,math500, each "
            "skipped with a note when it cannot load)"
        ),
    ] = None,
    threshold: Annotated[float, Opt(help="MinHash Jaccard threshold for near-duplicates")] = 0.7,
    ngram: Annotated[int, Opt(help="word n-gram size for decontamination")] = 8,
    min_overlap: Annotated[
        float, Opt(help="share of a benchmark item's n-grams that flags it")
    ] = 0.5,
    no_dedup: Annotated[bool, Opt("--no-dedup", help="skip duplicate removal")] = False,
    check_answers: Annotated[
        bool, Opt("--check-answers", help="decontaminate answers too")
    ] = False,
    semantic: Annotated[
        bool, Opt("--semantic", help="also drop paraphrases by embedding (glan[semantic])")
    ] = False,
    semantic_threshold: Annotated[float, Opt(help="cosine similarity for --semantic")] = 0.92,
    memory_gb: Annotated[
        float,
        Opt(
            help="memory for duplicate removal's sorts and --semantic's kept embeddings, in GB "
            "(beyond it, disk)"
        ),
    ] = 2.0,
    quiet: Quiet = False,
) -> None:
    """Filter, de-duplicate and decontaminate a run. Writes clean.jsonl, removed.jsonl and
    clean_summary.json into it."""
    from glan.post.clean import CleanSettings, clean_file
    from glan.run.files import atomic_write_json

    source = run_dir / "instructions.jsonl"
    if not source.is_file():
        fail(f"{run_dir} holds no instructions.jsonl: is it a glan run directory?")
    from pydantic import ValidationError

    try:
        settings = CleanSettings(
            dedup=not no_dedup,
            near_threshold=threshold,
            benchmarks=None if benchmarks is None else _benchmark_list(benchmarks),
            ngram=ngram,
            min_overlap=min_overlap,
            check_answers=check_answers,
            semantic=semantic,
            semantic_threshold=semantic_threshold,
            memory_gb=memory_gb,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = _CLEAN_FLAGS.get(str(err["loc"][0]), str(err["loc"][0]))
        fail(f"{flag}: {err['msg']}")
    with user_errors(), progress(quiet) as steps:
        summary = clean_file(
            source, run_dir / "clean.jsonl", run_dir / "removed.jsonl", settings, steps=steps
        )
    atomic_write_json(run_dir / "clean_summary.json", summary.model_dump(mode="json"))
    _say_benchmarks(summary.benchmarks_used, summary.benchmarks_missing)
    say(
        f"kept {summary.kept:,} of {summary.input:,}: filtered {sum(summary.filtered.values()):,}, "
        f"duplicates {sum(summary.duplicates.values()):,}, contaminated "
        f"{sum(summary.contaminated.values()):,} -> {run_dir / 'clean.jsonl'}"
    )


# CleanSettings fields as the user wrote them, for one clear error line.
_CLEAN_FLAGS = {
    "near_threshold": "--threshold",
    "ngram": "--ngram",
    "min_overlap": "--min-overlap",
    "semantic_threshold": "--semantic-threshold",
    "memory_gb": "--memory-gb",
}


def _say_benchmarks(used: dict[str, int], missing: dict[str, str]) -> None:
    for name, count in used.items():
        say(f"decontaminated against {name}: {plural(count, 'item')}")
    for name, why in missing.items():
        say(f"not decontaminated against {name}: {why}")


@app.command()
def decontaminate(
    source: Annotated[Path, typer.Argument(help="a JSONL file in the instructions.jsonl format")],
    out_path: Annotated[Path, Opt("--out", help="where the kept records go")],
    removed: Annotated[Path, Opt(help="where removed records go, with the item they matched")],
    benchmarks: Annotated[str, Opt(help="comma-separated names, files or hf: specs")],
    ngram: Annotated[int, Opt(help="word n-gram size")] = 8,
    min_overlap: Annotated[
        float, Opt(help="share of a benchmark item's n-grams that flags it")
    ] = 0.5,
    check_answers: Annotated[bool, Opt("--check-answers", help="check answers too")] = False,
) -> None:
    """Remove records that contain benchmark test items."""
    from glan.post.clean import decontaminate_file

    with user_errors():
        summary = decontaminate_file(
            source,
            out_path,
            removed,
            _benchmark_list(benchmarks),
            ngram,
            min_overlap,
            check_answers,
        )
    _say_benchmarks(summary.benchmarks_used, summary.benchmarks_missing)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(summary.contaminated.items())) or "none"
    say(f"kept {summary.kept:,} of {summary.input:,}; removed: {detail}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run's output directory")],
    fmt: Annotated[
        str, Opt("--format", "-f", help="messages|alpaca|sharegpt|parquet|hf")
    ] = "messages",
    out_dir: Annotated[Path | None, Opt("--out", help="default: RUN_DIR/export/FORMAT")] = None,
    push_to_hub: Annotated[str | None, Opt(help="upload to this Hugging Face dataset repo")] = None,
    public: Annotated[bool, Opt("--public", help="make the pushed repo public")] = False,
    shard_size: Annotated[
        str,
        Opt(
            help="largest file of the export, with its unit: 500MB, 2GB, 750MiB (B, KB, MB, GB, "
            "TB; KiB, MiB, GiB, TiB); more data: more files"
        ),
    ] = "500MB",
    quiet: Quiet = False,
) -> None:
    """Write a run's records for a trainer, with a dataset card. The cleaned records, when
    `glan clean` has run; files hold at most --shard-size each, and --push-to-hub sends only
    what the repository lacks."""
    from glan import export as exporting
    from glan.post.shards import parse_size

    with user_errors():
        shard_bytes = parse_size(shard_size)
        with progress(quiet) as steps:
            done = exporting.export(run_dir, fmt, out_dir, shard_bytes, steps)
        files = len(done.files)
        shards = f" of at most {shard_size.strip()}" if files > 1 else ""
        say(
            f"exported {plural(done.records, 'record')} as {fmt} to {done.folder}: "
            f"{plural(files, 'file')}{shards}"
        )
        if done.oversized:
            say(_oversized_note(done, shard_size.strip()))
        if push_to_hub:
            with progress(quiet) as steps:
                url = exporting.push_to_hub(done.folder, push_to_hub, not public, steps=steps)
            say(f"pushed to {url}")


def _oversized_note(done, shard_size: str) -> str:
    """Which files hold a record larger than the shard size on its own (the first three)."""
    n = len(done.oversized)
    named = [
        f"{Path(name).name}, {(done.folder / name).stat().st_size:,} bytes"
        for name in done.oversized[:3]
    ]
    more = f"; and {n - 3:,} more" if n > 3 else ""
    if n == 1:
        return (
            f"note: 1 record is larger than {shard_size} on its own: it has a file of its own, "
            f"over the size ({named[0]})"
        )
    return (
        f"note: {n:,} records are each larger than {shard_size} on their own: each has a file "
        f"of its own, over the size ({'; '.join(named)}{more})"
    )


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run's output directory")],
    out_path: Annotated[Path | None, Opt("--out", help="default: RUN_DIR/report.html")] = None,
    quiet: Quiet = False,
) -> None:
    """Write one self-contained HTML page with plots about a run."""
    from glan.report import build_report

    with user_errors(), progress(quiet) as steps:
        target = build_report(run_dir, out_path, steps)
    say(f"report: {target}")
