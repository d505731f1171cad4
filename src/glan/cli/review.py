"""`glan taxonomy review|export-review`: the browser review and its YAML export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, fail, out, plural, taxonomy_app

QUORUM_HELP = "votes a node needs before it is decided (default: the one the database remembers)"


@taxonomy_app.command("review")
def taxonomy_review(
    path: Annotated[Path | None, typer.Argument(help="taxonomy YAML to import (merged in)")] = None,
    db: Annotated[Path, Opt("--db", help="review database (votes live here)")] = Path(
        "review.sqlite"
    ),
    host: Annotated[
        str, Opt(help="address to bind; non-loopback needs reviewers' links or a token")
    ] = "127.0.0.1",
    port: Annotated[int, Opt(help="port")] = 8765,
    reviewers: Annotated[
        str | None, Opt(help="comma-separated names: one private link each (printed once)")
    ] = None,
    reviewers_file: Annotated[
        Path | None, Opt(help="file of reviewers' names, one a line: one private link each")
    ] = None,
    token_env: Annotated[
        str | None, Opt(help="env variable holding a shared token (open mode)")
    ] = None,
    allow_host: Annotated[
        list[str] | None, Opt(help="a Host name to serve besides the bound address (repeatable)")
    ] = None,
    tls_proxy: Annotated[
        bool, Opt("--tls-proxy", help="served behind a TLS proxy: cookies are Secure")
    ] = False,
    public_url: Annotated[
        str | None, Opt(help="the address reviewers open (the proxy's), used in printed links")
    ] = None,
    quorum: Annotated[int | None, Opt(help=QUORUM_HELP)] = None,
) -> None:
    """Serve the taxonomy review in the browser. Reviewers vote; the majority decides."""
    try:
        import uvicorn

        from glan.review.app import ServeOptions, check_bind, create_app
    except ImportError:
        fail("the review app needs its extra: pip install 'glan[review]'")
    from urllib.parse import urlsplit

    from glan.review.export import derived_pins
    from glan.review.links import Links, read_names
    from glan.review.store import ReviewStore
    from glan.taxonomy import load_taxonomy

    names = read_names(reviewers or "")
    if reviewers_file is not None:
        if not reviewers_file.is_file():
            fail(f"--reviewers-file {reviewers_file}: no such file")
        names += [n for n in read_names(reviewers_file.read_text()) if n not in names]
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        fail(f"--token-env {token_env}: that environment variable is empty or unset")
    # A review that had links keeps them: restarting without --reviewers must not open it up.
    per_reviewer = bool(names) or (db.exists() and Links(ReviewStore(db)).any())
    if per_reviewer and token:
        fail("--token-env is for the open mode; with reviewers' links each link is its own key")
    check_bind(host, token, per_reviewer)
    store = ReviewStore(db)
    links = Links(store)
    allowed = list(allow_host or [])
    if public_url:
        allowed.append(urlsplit(public_url).hostname or "")
    options = ServeOptions(host, port, tuple(allowed), token, per_reviewer, tls_proxy)
    quorum = store.remember_quorum(quorum)
    if path is not None or not store.snapshot().nodes:  # a new database starts from the default
        derived = derived_pins(path.read_text()) if path else {}
        added, matched = store.import_taxonomy(
            load_taxonomy(path), source=f"import {path or 'default'}", derived=derived
        )
        out.print(f"imported {path or 'the default taxonomy'}: {added} new, {matched} known nodes")
    base = (public_url or options.base_url()).rstrip("/")
    if per_reviewer:
        live = links.live_names()
        out.print("Private links, shown once (each is its holder's key: send it to them alone):")
        for name in names:
            if name in live:
                out.print(f"  {name}: the link from an earlier start still works", soft_wrap=True)
            else:
                out.print(f"  {name}: {base}/?token={links.issue(name)}", soft_wrap=True)
        out.print(f"  admin (you): {base}/?token={links.issue_admin()}", soft_wrap=True)
        out.print("The admin's page (Reviewers) adds a reviewer or revokes a link while it runs.")
    else:
        out.print(f"review at {base}/" + ("?token=..." if token else ""), soft_wrap=True)
    quorum_note = f"quorum {quorum}, remembered by the database" if quorum else "no quorum"
    out.print(f"votes in {db} ({quorum_note}); Ctrl-C stops, nothing is lost", soft_wrap=True)
    out.print(
        f"when done: glan taxonomy export-review --db {db} --out reviewed.yaml", soft_wrap=True
    )
    uvicorn.run(create_app(store, options), host=host, port=port, log_level="warning")


@taxonomy_app.command("export-review")
def taxonomy_export_review(
    db: Annotated[Path, Opt("--db", help="review database")],
    file: Annotated[Path, Opt("--out", "-o", help="where to write the reviewed YAML")],
    quorum: Annotated[int | None, Opt(help=QUORUM_HELP)] = None,
) -> None:
    """Write the review as taxonomy YAML, votes included. It is what glan generate --taxonomy
    reads."""
    from glan.review.export import review_taxonomy, review_yaml
    from glan.review.rules import tree_view
    from glan.review.store import ReviewStore
    from glan.run.files import atomic_write_text

    if not db.exists():
        fail(f"{db}: no review database there")
    store = ReviewStore(db)
    quorum = store.quorum() if quorum is None else quorum
    views = tree_view(store.snapshot(), quorum)
    atomic_write_text(file, review_yaml(views, quorum))
    kept = len(review_taxonomy(views).disciplines())
    out.print(
        f"wrote {plural(kept, 'kept discipline')} to {file} (quorum {quorum}); "
        f"next: glan generate --taxonomy {file}",
        soft_wrap=True,
    )
