"""`glan taxonomy build|show|validate|stats|add`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, console, endpoint_config, fail, out, plural, taxonomy_app


@taxonomy_app.command("build")
def taxonomy_build(
    file: Annotated[Path, Opt("--out", "-o", help="where to write the draft YAML")],
    backend: Annotated[str | None, Opt(help="local, openai or vllm")] = None,
    model: Annotated[str | None, Opt(help="model name")] = None,
    base_url: Annotated[str | None, Opt(help="endpoint URL")] = None,
    api_key_env: Annotated[str | None, Opt(help="name of the env variable with the key")] = None,
    samples: Annotated[int, Opt(help="samples per prompt wording")] = 1,
    seed: Annotated[int, Opt(help="seed")] = 0,
) -> None:
    """Draft a taxonomy with the model, for people to review. Several prompt wordings are
    asked and their drafts merged."""
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

    tax, merged = run(draft())
    if not tax.disciplines():
        fail("the model produced no usable taxonomy; try a stronger model or more --samples")
    save_taxonomy(tax, file)
    lines = [f"{merged.drafts} drafts listed {merged.listed} disciplines: {merged.summary()}"]
    lines += [f"  field {into!r} merged into {kept!r}" for kept, into in merged.merged_fields]
    lines += [f"  dropped {name!r}: not a field" for name in merged.non_fields]
    lines.append(
        f"wrote {len(tax.disciplines())} disciplines in {len(tax.fields)} fields to {file}; "
        f"review it in the browser: glan taxonomy review {file}"
    )
    for line in lines:  # one line each, unwrapped: they are read by scripts as well as people
        out.print(line, highlight=False, soft_wrap=True)


@taxonomy_app.command("show")
def taxonomy_show(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Print the tree of kept disciplines."""
    from rich.text import Text
    from rich.tree import Tree

    from glan.taxonomy import load_taxonomy

    def label(node) -> Text:  # Text, not markup: node names are the reviewers' own words
        text = Text(node.name)
        if not node.kept:
            text.append(" (removed)", style="red")
        return text

    tax = load_taxonomy(path)
    root = Tree(Text(f"taxonomy ({plural(len(tax.disciplines()), 'kept discipline')})"))
    for f in tax.fields:
        fnode = root.add(label(f))
        for s in f.subfields:
            snode = fnode.add(label(s))
            for d in s.disciplines:
                snode.add(label(d))
    out.print(root)


@taxonomy_app.command("validate")
def taxonomy_validate(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Check the taxonomy as generate does; list each problem. Exit 2 if there is one."""
    from glan.taxonomy import load_taxonomy

    tax = load_taxonomy(path)
    problems = tax.problems()
    if problems:
        for p in problems:
            console.print(f"problem: {p}", style="red", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    own = tax.own_groups()
    note = f" (groups of its own, reported apart from GLAN-Test's: {', '.join(own)})" if own else ""
    out.print(f"ok{note}", highlight=False, soft_wrap=True)


@taxonomy_app.command("stats")
def taxonomy_stats(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML")] = None,
) -> None:
    """Count the fields, sub-fields and kept disciplines. Disciplines are also counted per
    GLAN-Test group."""
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
    file: Annotated[Path, Opt("--file", "-f", help="taxonomy YAML to edit (created if missing)")],
    description: Annotated[str | None, Opt(help="shown to the model")] = None,
    weight: Annotated[float, Opt(help="share of the target count")] = 1.0,
    from_default: Annotated[
        bool,
        Opt("--from-default", help="a missing file starts as a copy of the default taxonomy"),
    ] = False,
) -> None:
    """Add a discipline (and missing parents) to a taxonomy file. A missing file is created
    holding only this node (a small taxonomy of your own), or the defaults with --from-default."""
    from glan.taxonomy import Taxonomy, load_taxonomy, save_taxonomy

    if file.exists():
        tax = load_taxonomy(file)
    else:
        tax = load_taxonomy(None) if from_default else Taxonomy()
    added = tax.add(node, description, weight)
    save_taxonomy(tax, file)
    out.print(
        f"added {added} to {file} ({plural(len(tax.disciplines()), 'kept discipline')})",
        highlight=False,
    )
