"""The `glan` command: parses, calls the library, prints. Nothing here the API cannot do."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from glan.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GLAN instruction data.")
taxonomy_app = typer.Typer(no_args_is_help=True, help="Show, check and edit the taxonomy.")
app.add_typer(taxonomy_app, name="taxonomy")
console = Console(stderr=True)
out = Console()

Opt = typer.Option


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress_table(progress: Any) -> Table:
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
        _fail(f"-n must be a positive number of pairs, got {n}")
    if dry_run:
        plan = make_plan(n, cfg, tax)
        table = Table(title=f"plan for {n:,} pairs over {len(plan.disciplines)} disciplines")
        for col in ("stage", "model", "calls", "prompt tokens", "completion tokens", "cost"):
            table.add_column(col, justify="left" if col in ("stage", "model") else "right")
        est = estimate(plan, cfg.adapted_to_local())
        for e in est:
            cost = "n/a (no price)" if e.cost_usd is None else f"${e.cost_usd:,.2f}"
            table.add_row(
                e.stage,
                e.model,
                f"{e.calls:,}",
                f"{e.prompt_tokens:,}",
                f"{e.completion_tokens:,}",
                cost,
            )
        out.print(table)
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
    from glan.config import load_config
    from glan.llm import ChatRequest, LLMClient, create_backend, user

    cfg = load_config(
        None,
        {
            "llm.backend": backend,
            "llm.model": model,
            "llm.base_url": base_url,
            "llm.api_key_env": api_key_env,
        },
    )

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


@taxonomy_app.command("build")
def taxonomy_build(
    file: Annotated[Path, Opt("--out", "-o", help="where to write the draft YAML")],
    backend: Annotated[str | None, Opt(help="local or openai")] = None,
    model: Annotated[str | None, Opt(help="model name")] = None,
    base_url: Annotated[str | None, Opt(help="endpoint URL")] = None,
    api_key_env: Annotated[str | None, Opt(help="name of the env variable with the key")] = None,
    samples: Annotated[int, Opt(help="samples per prompt wording")] = 1,
    seed: Annotated[int, Opt(help="seed")] = 0,
) -> None:
    """Draft a taxonomy with the model (several prompt wordings, merged) for people to review."""
    from glan.aio import run
    from glan.config import load_config
    from glan.llm import LLMClient, create_backend
    from glan.stages.taxonomy_build import build_taxonomy
    from glan.store import ResponseCache
    from glan.taxonomy import save_taxonomy

    cfg = load_config(
        None,
        {
            "llm.backend": backend,
            "llm.model": model,
            "llm.base_url": base_url,
            "llm.api_key_env": api_key_env,
        },
    )

    async def draft():
        cache = ResponseCache(file.parent / f".{file.name}.cache.sqlite")
        client = LLMClient(create_backend(cfg.llm, concurrency=4), cache=cache)
        try:
            return await build_taxonomy(client, seed=seed, samples_per_prompt=samples)
        finally:
            await client.aclose()
            cache.close()

    tax = run(draft())
    if not tax.disciplines():
        _fail("the model produced no usable taxonomy; try a stronger model or more --samples")
    save_taxonomy(tax, file)
    out.print(
        f"wrote {len(tax.disciplines())} disciplines in {len(tax.fields)} fields to {file}; "
        "review it (votes or status per node), then: glan taxonomy validate " + str(file)
    )


@taxonomy_app.command("show")
def taxonomy_show(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Print the tree of kept disciplines."""
    from rich.tree import Tree

    from glan.taxonomy import load_taxonomy

    tax = load_taxonomy(path)
    root = Tree(f"taxonomy ({len(tax.disciplines())} kept disciplines)")
    for f in tax.fields:
        fnode = root.add(f"{f.name}" + ("" if f.kept else " [red](removed)[/]"))
        for s in f.subfields:
            snode = fnode.add(s.name + ("" if s.kept else " [red](removed)[/]"))
            for d in s.disciplines:
                snode.add(d.name + ("" if d.kept else " [red](removed)[/]"))
    out.print(root)


@taxonomy_app.command("validate")
def taxonomy_validate(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Check the taxonomy; exit 2 with each problem listed if it has any."""
    from glan.taxonomy import load_taxonomy

    problems = load_taxonomy(path).problems()
    if problems:
        for p in problems:
            console.print(f"[red]problem:[/] {p}", highlight=False)
        raise typer.Exit(2)
    out.print("ok")


@taxonomy_app.command("stats")
def taxonomy_stats(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Counts of fields, sub-fields and kept disciplines, per GLAN-Test group."""
    from collections import Counter

    from glan.taxonomy import load_taxonomy

    tax = load_taxonomy(path)
    kept = tax.disciplines()
    out.print(
        f"fields: {len(tax.fields)}  sub-fields: {sum(len(f.subfields) for f in tax.fields)}  "
        f"kept disciplines: {len(kept)}"
    )
    for group, count in sorted(Counter(d.group or "(none)" for d in kept).items()):
        out.print(f"  {group}: {count}")


@taxonomy_app.command("add")
def taxonomy_add(
    node: Annotated[str, typer.Argument(help="FIELD/SUBFIELD/DISCIPLINE")],
    file: Annotated[
        Path, Opt("--file", "-f", help="taxonomy YAML to edit (created from the default)")
    ],
    description: Annotated[str | None, Opt(help="shown to the model")] = None,
    weight: Annotated[float, Opt(help="share of the target count")] = 1.0,
) -> None:
    """Add a discipline (and any missing parents) to a taxonomy file."""
    from glan.taxonomy import load_taxonomy, save_taxonomy

    tax = load_taxonomy(file if file.exists() else None)
    added = tax.add(node, description, weight)
    save_taxonomy(tax, file)
    out.print(f"added {added} to {file}")


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
