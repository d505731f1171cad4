"""`glan taxonomy review|export-review`: the browser review and its YAML export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, fail, out, taxonomy_app


@taxonomy_app.command("review")
def taxonomy_review(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML to import (merged in)")] = None,
    db: Annotated[Path, Opt("--db", help="review database (votes live here)")] = Path(
        "review.sqlite"
    ),
    host: Annotated[str, Opt(help="address to bind; non-loopback needs --token-env")] = "127.0.0.1",
    port: Annotated[int, Opt(help="port")] = 8765,
    token_env: Annotated[
        str | None, Opt(help="env variable holding the shared review token")
    ] = None,
    quorum: Annotated[int, Opt(help="votes a node needs before it is decided")] = 0,
) -> None:
    """Serve the taxonomy review in the browser: reviewers vote, the majority decides."""
    try:
        import uvicorn

        from glan.review.app import check_bind, create_app
    except ImportError:
        fail("the review app needs its extra: pip install 'glan[review]'")
    from glan.review.store import ReviewStore
    from glan.taxonomy import load_taxonomy

    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        fail(f"--token-env {token_env}: that environment variable is empty or unset")
    check_bind(host, token)
    store = ReviewStore(db)
    if path is not None or not store.snapshot().nodes:  # a new database starts from the default
        added, matched = store.import_taxonomy(
            load_taxonomy(path), source=f"import {path or 'default'}"
        )
        out.print(f"imported {path or 'the default taxonomy'}: {added} new, {matched} known nodes")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (
        "?token=..." if token else ""
    )
    out.print(f"review at {url}  (votes in {db}; Ctrl-C stops, nothing is lost)", soft_wrap=True)
    out.print(
        f"when done: glan taxonomy export-review --db {db} --out reviewed.yaml", soft_wrap=True
    )
    uvicorn.run(
        create_app(store, quorum=quorum, token=token), host=host, port=port, log_level="warning"
    )


@taxonomy_app.command("export-review")
def taxonomy_export_review(
    db: Annotated[Path, Opt("--db", help="review database")],
    file: Annotated[Path, Opt("--out", "-o", help="where to write the reviewed YAML")],
    quorum: Annotated[int, Opt(help="votes a node needs before it is decided")] = 0,
) -> None:
    """Write the review as taxonomy YAML (votes included) for glan generate --taxonomy."""
    from glan.review.export import review_taxonomy
    from glan.review.rules import tree_view
    from glan.review.store import ReviewStore
    from glan.taxonomy import save_taxonomy

    if not db.exists():
        fail(f"{db}: no review database there")
    tax = review_taxonomy(tree_view(ReviewStore(db).snapshot(), quorum))
    save_taxonomy(tax, file)
    out.print(
        f"wrote {len(tax.disciplines())} kept disciplines to {file}; next: glan generate --taxonomy {file}"
    )
