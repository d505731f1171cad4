"""`glan taxonomy build|show|validate|stats|add`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, console, endpoint_config, fail, out, taxonomy_app


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
    from glan.llm import LLMClient, create_backend
    from glan.stages.taxonomy_build import build_taxonomy
    from glan.store import ResponseCache
    from glan.taxonomy import save_taxonomy

    cfg = endpoint_config(backend, model, base_url, api_key_env)

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
        fail("the model produced no usable taxonomy; try a stronger model or more --samples")
    save_taxonomy(tax, file)
    out.print(
        f"wrote {len(tax.disciplines())} disciplines in {len(tax.fields)} fields to {file}; "
        f"review it in the browser: glan taxonomy review {file}"
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
