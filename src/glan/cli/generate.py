"""`glan generate` and `glan check`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from glan.cli.app import Opt, app, console, endpoint_config, fail, out
from glan.errors import UserError

if TYPE_CHECKING:
    from glan.pipeline import RunProgress


def _progress_table(progress: RunProgress) -> Table:
    elapsed = max(1e-6, time.monotonic() - progress.started)
    table = Table(box=None, pad_edge=False)
    for col in ("stage", "done/planned", "failed", "req/s", "tokens", "spend", "ETA"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    usage = progress.usage.as_dict() if progress.usage else {}
    for name, st in progress.stages.items():
        rows = usage.get(name, {}).values()
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
        spend = sum(r["cost_usd"] for r in rows)
        rate = st.done / elapsed
        left = max(0, st.planned - st.done)
        eta = f"{left / rate:,.0f} s" if rate > 0 and left else "-"
        table.add_row(
            name,
            f"{st.done:,}/{st.planned:,}",
            str(st.failed),
            f"{rate:.1f}",
            f"{tokens:,}",
            f"${spend:.4f}",
            eta,
        )
    return table


def parse_sets(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as YAML scalars (numbers, true/false, null, strings)."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


@app.command()
def generate(
    out_dir: Annotated[Path, Opt("--out", "-o", help="output directory (resumed if it exists)")],
    n: Annotated[int, Opt("-n", help="number of instruction pairs to make")],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config file")] = None,
    taxonomy: Annotated[Path | None, Opt("--taxonomy", "-t", help="taxonomy YAML")] = None,
    backend: Annotated[str | None, Opt(help="local or openai (all stages)")] = None,
    model: Annotated[str | None, Opt(help="model for all stages")] = None,
    base_url: Annotated[str | None, Opt(help="OpenAI-compatible endpoint URL")] = None,
    api_key_env: Annotated[str | None, Opt(help="name of the env variable with the key")] = None,
    concurrency: Annotated[int | None, Opt(help="requests in flight at most")] = None,
    seed: Annotated[int | None, Opt(help="run seed")] = None,
    set_: Annotated[
        list[str] | None,
        Opt("--set", help="any config key, dotted: --set stages.answers.model=gpt-4o-mini"),
    ] = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="show planned calls, tokens, cost; spend nothing")
    ] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Walk the taxonomy down to N question-answer pairs."""
    from glan.api import plan as make_plan
    from glan.config import load_config
    from glan.estimate import estimate
    from glan.pipeline import Pipeline, RunProgress
    from glan.taxonomy import load_taxonomy

    overrides = {
        "llm.backend": backend,
        "llm.model": model,
        "llm.base_url": base_url,
        "llm.api_key_env": api_key_env,
        "concurrency": concurrency,
        "seed": seed,
        **parse_sets(set_ or []),
    }
    cfg = load_config(config, overrides)
    tax = load_taxonomy(taxonomy)
    if n <= 0:
        fail(f"-n must be a positive number of pairs, got {n}")
    if dry_run:
        plan = make_plan(n, cfg, tax)
        table = Table(title=f"plan for {n:,} pairs over {len(plan.disciplines)} disciplines")
        for col in ("stage", "model", "calls", "prompt tokens", "completion tokens", "cost"):
            table.add_column(col, justify="left" if col in ("stage", "model") else "right")
        est = estimate(plan, cfg.adapted())
        for e in est:
            cost = "?" if e.cost_usd is None else f"${e.cost_usd:,.2f}"
            table.add_row(
                e.stage,
                e.model,
                f"{e.calls:,}",
                f"{e.prompt_tokens:,}",
                f"{e.completion_tokens:,}",
                cost,
            )
        out.print(table)
        unpriced = sorted({e.model for e in est if e.cost_usd is None})
        if unpriced:
            out.print(
                f"no price for {', '.join(unpriced)}: add prices: {{MODEL: {{input: USD_PER_1M, "
                "output: USD_PER_1M}} to the config, or --set prices.MODEL.input=...",
                highlight=False,
                soft_wrap=True,
            )
        return
    progress = RunProgress()
    pipeline = Pipeline(cfg, tax, out_dir, n, progress)
    from glan.aio import run

    if quiet or not console.is_terminal:
        result = run(pipeline.run())
    else:
        stop = threading.Event()
        with Live(_progress_table(progress), console=console, refresh_per_second=4) as live:

            def refresh() -> None:
                while not stop.wait(0.25):
                    live.update(_progress_table(progress))

            thread = threading.Thread(target=refresh, daemon=True)
            thread.start()
            try:
                result = run(pipeline.run())
            finally:
                stop.set()
                thread.join()
                live.update(_progress_table(progress))
    m = result.manifest
    tokens = sum(
        r["prompt_tokens"] + r["completion_tokens"]
        for models in m["usage"].values()
        for r in models.values()
    )
    out.print(
        f"{result.instructions:,}/{n:,} pairs, {m['counts']['subjects']:,} subjects, "
        f"{m['counts']['syllabi']:,} syllabi, {tokens:,} tokens, ${m['cost_usd']:.4f} "
        f"in {m['elapsed_s']:.1f} s -> {result.out_dir / 'instructions.jsonl'}",
        highlight=False,
    )
    if result.instructions < n:
        console.print(
            f"[yellow]warning:[/] {n - result.instructions} pairs short: see failures in manifest.json"
        )
        raise typer.Exit(1)


@app.command()
def check(
    backend: Annotated[str, Opt(help="local or openai")] = "openai",
    model: Annotated[str | None, Opt(help="model name")] = None,
    base_url: Annotated[str | None, Opt(help="endpoint URL")] = None,
    api_key_env: Annotated[str | None, Opt(help="name of the env variable with the key")] = None,
) -> None:
    """Send one tiny request to an endpoint and say whether it works."""
    from glan.aio import run
    from glan.llm import ChatRequest, LLMClient, create_backend, user

    cfg = endpoint_config(backend, model, base_url, api_key_env)

    async def ping() -> str:
        client = LLMClient(create_backend(cfg.llm, concurrency=1))
        try:
            reply = await client.chat(
                ChatRequest(messages=user("Reply with the word: ready"), max_tokens=8)
            )
        finally:
            await client.aclose()
        return reply.text

    text = run(ping())
    out.print(f"ok: {cfg.llm.backend} {cfg.llm.model or ''} answered {text.strip()[:60]!r}")
