"""`glan generate --dry-run`: calls, tokens and cost per stage, with a total, before spending."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from glan.cli.app import plural
from glan.config import STAGES, GenerateConfig
from glan.estimate import StageEstimate, batch_turnarounds, estimate
from glan.llm.settings import AnyBackendSettings
from glan.planner import Plan

if TYPE_CHECKING:
    from glan.rerun import RerunPrice


def print_dry_run(plan: Plan, cfg: GenerateConfig, out: Console) -> None:
    """`cfg` as the pipeline will run it (adapted to the models), so the calls shown are the
    ones the run's manifest will plan."""
    title = (
        f"plan for {plural(plan.target, 'pair')} over {plural(len(plan.disciplines), 'discipline')}"
    )
    for line in backend_lines(cfg):
        out.print(line, highlight=False, soft_wrap=True)
    rows = estimate(plan, cfg)
    print_estimates(title, rows, out, batch_turnarounds(cfg, rows))


def print_rerun(price: RerunPrice, out_dir: Path, cfg: GenerateConfig, out: Console) -> None:
    """What re-running the run in `out_dir` would send (glan.rerun), in the plan's table."""
    for line in backend_lines(cfg):
        out.print(line, highlight=False, soft_wrap=True)
    out.print(
        f"re-run of {out_dir}: {price.calls:,} of {plural(price.planned, 'planned call')} "
        "would be sent",
        highlight=False,
        soft_wrap=True,
    )
    title = (
        f"re-run for {plural(price.pairs, 'pair')} over {plural(price.disciplines, 'discipline')}"
    )
    print_estimates(title, price.rows, out, batch_turnarounds(cfg, price.rows, price.waiting))
    notes = []
    if price.waiting:
        lines = sum(price.waiting.values())
        notes.append(
            f"{plural(lines, 'request')} in live batches ({', '.join(price.waiting)}) "
            f"{'is' if lines == 1 else 'are'} paid already: the re-run collects "
            f"{'it' if lines == 1 else 'them'}, not counted above"
        )
    if price.calls:
        notes.append(
            f"exact for what {out_dir} holds; below a call still to be sent, replies are "
            "taken to be as large as the run's own and of the plan's typical tokens "
            "(docs/generate.md)"
        )
    for note in notes:
        out.print(note, highlight=False, soft_wrap=True)


def backend_lines(cfg: GenerateConfig) -> list[str]:
    """Where the stages' requests go, one line per backend: its kind, and its address and key
    variable for one reached over HTTP, so a run nobody meant to be local (or remote) shows."""
    stages: dict[str, list[str]] = {}
    for stage in STAGES:
        stages.setdefault(where(cfg.backend_for(stage)), []).append(stage)
    if len(stages) == 1:
        return [f"backend: {next(iter(stages))} for all stages"]
    return [f"backend: {place} for {', '.join(names)}" for place, names in stages.items()]


def where(settings: AnyBackendSettings) -> str:
    """ "local (in-process llama.cpp)", "openai at URL (key from $VAR)"."""
    url = getattr(settings, "base_url", None)
    if url is None:
        return f"{settings.backend} ({type(settings).model_fields['backend'].description})"
    key = getattr(settings, "api_key_env", None)
    return f"{settings.backend} at {url}" + (f" (key from ${key})" if key else "")


def print_estimates(
    title: str, est: list[StageEstimate], out: Console, turnarounds: list[str] | None = None
) -> None:
    """Calls, tokens and cost per row, with a total and a hint for models without a price;
    for batch rows, how many turnarounds to wait: one per level in `turnarounds` (default:
    each batch row with calls; glan.estimate.batch_turnarounds)."""
    table = Table(title=title, show_footer=True)
    total_cost = None if any(e.cost_usd is None for e in est) else sum(e.cost_usd or 0 for e in est)
    footer = {
        "stage": "total",
        "model": "",
        "calls": f"{sum(e.calls for e in est):,}",
        "prompt tokens": f"{sum(e.prompt_tokens for e in est):,}",
        "completion tokens": f"{sum(e.completion_tokens for e in est):,}",
        "cost": "?" if total_cost is None else f"${total_cost:,.2f}",
    }
    for col, foot in footer.items():
        table.add_column(col, foot, justify="left" if col in ("stage", "model") else "right")
    for e in est:
        table.add_row(
            e.stage,
            f"{e.model} (batch)" if e.batch else e.model,
            f"{e.calls:,}",
            f"{e.prompt_tokens:,}",
            f"{e.completion_tokens:,}",
            "?" if e.cost_usd is None else f"${e.cost_usd:,.2f}",
        )
    out.print(table)
    if any(e.batch for e in est):
        levels = (
            [e.stage for e in est if e.batch and e.calls] if turnarounds is None else turnarounds
        )
        out.print(
            "(batch): priced at the batch price, prices.MODEL.batch_factor of the online one "
            f"(0.5 unless set); {wait_for(levels)} (docs/batch.md)",
            highlight=False,
            soft_wrap=True,
        )
    unpriced = sorted({e.model for e in est if e.cost_usd is None})
    if unpriced:
        out.print(
            f"no price for {', '.join(unpriced)}: add prices: {{MODEL: {{input: USD_PER_1M, "
            "output: USD_PER_1M}} to the config, or --set prices.MODEL.input=...",
            highlight=False,
            soft_wrap=True,
        )


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def wait_for(levels: list[str]) -> str:
    """ "expect about two batch turnarounds, one per level sent by batch (questions, answers)"."""
    if not levels:
        return "nothing to wait for by batch"
    n = len(levels)
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else f"{n:,}"
    how = "the level" if n == 1 else "one per level"
    return (
        f"expect about {word} batch turnaround{'' if n == 1 else 's'}, {how} sent by batch "
        f"({', '.join(levels)})"
    )
