"""Taxonomy review in a real browser: two reviewers at once, removal, proposals, export."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from typer.testing import CliRunner

from glan.cli import app as cli_app
from glan.review.app import ServeOptions, create_app
from glan.review.links import Links
from glan.review.store import ReviewStore
from glan.taxonomy import load_taxonomy

# Markup that runs if the page ever puts a note in as HTML (an inline <script> inserted through
# innerHTML never runs, so it would prove nothing; an image's onerror does run).
SCRIPT_NOTE = '<img src=x onerror="window.pwned = 1"> & <b>bold?</b>'
START_TIMEOUT_S = 20


def serve(make_app) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Serve `make_app(port)` on a loopback socket that listens before the thread starts (no
    request can race the start); wait, bounded, until uvicorn says it is serving."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(port), log_level="critical", lifespan="on"))

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when its startup fails
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        thread.join(0.05)  # returns at once when the server thread has ended
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise AssertionError(f"the review server did not start within {START_TIMEOUT_S} s")
    return f"http://127.0.0.1:{port}/", server, thread


def stop(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(5)


def new_store(tmp_path_factory) -> ReviewStore:
    store = ReviewStore(tmp_path_factory.mktemp("review") / "review.sqlite")
    store.import_taxonomy(load_taxonomy())
    return store


@pytest.fixture(scope="module")
def review_url(tmp_path_factory) -> Iterator[str]:
    """The app on the shipped default taxonomy (open mode), on a free loopback port."""
    store = new_store(tmp_path_factory)
    url, server, thread = serve(lambda port: create_app(store, ServeOptions(port=port)))
    yield url
    stop(server, thread)


def test_the_server_wait_gives_up_when_the_server_cannot_start():
    async def broken(scope, receive, send):  # fails its startup: uvicorn never serves
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "broken on purpose"})

    with pytest.raises(AssertionError, match="did not start"):
        serve(lambda port: broken)


def reviewer(browser, url: str, name: str):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.fill("#name-input", name)
    page.click("#name-form button")
    page.wait_for_selector("#name-dialog:not([open])", state="attached")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def markup_ran(page) -> bool:
    """Whether a note's markup ran: first let every image in the votes fail to load (an
    unescaped <img onerror> runs its handler then), then read what the handler would set."""
    page.evaluate(
        """() => Promise.all([...document.querySelectorAll('#detail .voters img')].map((img) =>
             img.complete ? null : new Promise((done) => {
               img.addEventListener('error', done); img.addEventListener('load', done); })))"""
    )
    return page.evaluate("window.pwned") is not None


def select(page, name: str) -> None:
    """Find a node by search, click it, clear the search (its ancestors stay open)."""
    page.fill("#search", name)
    page.locator(".row", has=page.get_by_text(name, exact=True)).first.click()
    page.fill("#search", "")
    page.locator("#search").blur()  # keys go to the page again
    page.wait_for_selector("#detail h2")


@pytest.mark.slow
def test_two_reviewers_vote_remove_propose_and_export(chromium, review_url, artifacts, tmp_path):
    ann = reviewer(chromium, review_url, "ann")
    bob = reviewer(chromium, review_url, "bob")
    for page in (ann, bob):
        select(page, "Statistics")
    ann.keyboard.press("r")  # both votes go out before either answer comes back
    bob.keyboard.press("r")
    for page in (ann, bob):
        page.wait_for_function(
            "() => document.querySelector('#detail .panel h3').textContent.includes('2 remove')",
            timeout=8000,
        )
    voters = bob.locator("#detail .voters li").all_inner_texts()
    assert any("ann" in v for v in voters) and any("bob" in v for v in voters)

    # the removal greys the whole subtree
    bob.keyboard.press("ArrowRight")
    below = bob.locator("li.state-removed-by-ancestor", has_text="Bayesian Statistics").first
    assert float(below.evaluate("li => getComputedStyle(li.firstElementChild).opacity")) < 0.6
    assert "removed with parent" in below.inner_text()

    # a note with markup is shown as text, never run
    select(ann, "Ethics")
    ann.fill("#note", SCRIPT_NOTE)
    ann.click("#detail .votebar .keep")
    ann.wait_for_selector("#detail .voters .note")
    select(bob, "Ethics")
    bob.wait_for_selector("#detail .voters .note", timeout=8000)
    assert not markup_ran(bob)
    assert SCRIPT_NOTE in bob.inner_text("#detail .voters")

    # ann proposes a discipline, bob sees it and accepts it
    select(ann, "Mathematics")
    ann.fill("#propose-name", "Homological Algebra")
    ann.click("#propose")
    ann.wait_for_selector(".row .name:text-is('Homological Algebra')")
    bob.reload()
    select(bob, "Homological Algebra")
    bob.keyboard.press("k")
    bob.wait_for_function(
        "() => document.querySelector('#detail h2').textContent.includes('proposal · accepted')"
        " && document.querySelector('#detail .panel h3').textContent.includes('2 keep')"
    )

    # N jumps to the next live node without my vote, skipping the removed subtree
    select(bob, "Statistics")
    bob.keyboard.press("n")
    assert bob.locator(".row.selected .name").inner_text() == "Logic and Theory of Computation"
    assert bob.locator("#detail .votebar .on").count() == 0

    # the main view, for a person to look at
    select(bob, "Statistics")
    bob.screenshot(path=str(artifacts / "review-main.png"))
    bob.click(".tab[data-view=summary]")
    assert "disciplines kept by the current majority" in bob.inner_text("#view-summary")
    bob.screenshot(path=str(artifacts / "review-summary.png"))
    bob.click(".tab[data-view=activity]")
    bob.wait_for_selector("#view-activity td:text-is('propose')")
    bob.screenshot(path=str(artifacts / "review-activity.png"))
    bob.click(".tab[data-view=tree]")

    # export from the button, then glan generate reads it
    with bob.expect_download() as download:
        bob.click("#export")
    reviewed = tmp_path / "reviewed.yaml"
    download.value.save_as(reviewed)
    assert not ann.errors and not bob.errors, ann.errors + bob.errors  # type: ignore[attr-defined]
    kept = {d.path for d in load_taxonomy(reviewed).disciplines()}
    assert "Formal Sciences/Mathematics/Homological Algebra" in kept
    assert not any("/Statistics/" in path for path in kept)
    result = CliRunner().invoke(
        cli_app,
        ["generate", "--out", str(tmp_path / "run"), "-n", "50", "--dry-run", "-t", str(reviewed)],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_private_links_the_admin_page_revocation_and_groups(chromium, tmp_path_factory):
    store = new_store(tmp_path_factory)
    admin_token = Links(store).issue_admin()
    url, server, thread = serve(
        lambda port: create_app(store, ServeOptions(port=port, per_reviewer=True))
    )
    try:
        admin = chromium.new_context().new_page()
        admin.goto(f"{url}?token={admin_token}")
        assert admin.url == url  # the token leaves the address bar and the history
        assert admin.inner_text("#me") == "admin"
        assert admin.locator("#name-dialog[open]").count() == 0  # nobody types a name
        admin.click("#admin-link")
        admin.fill("#add-name", "carol")
        admin.click("#add-form button")
        admin.wait_for_selector("#new-link:not(.hidden)")
        link = admin.locator("#new-link-url").input_value()
        assert link.startswith(f"{url}?token=")

        carol = chromium.new_context().new_page()
        carol.goto(link)
        assert carol.inner_text("#me") == "carol" and carol.locator("#change-name").count() == 0
        assert carol.evaluate("document.cookie") == ""  # the link's cookie is HttpOnly
        select(carol, "Agronomy")
        carol.keyboard.press("k")
        carol.wait_for_selector("#detail .voters li:has-text('carol')")

        # the discipline shows its group; a change is proposed on its field and, voted, applies
        assert carol.inner_text("#group-panel .group-name") == "industry_agriculture"
        carol.click("#group-panel button.link")
        assert "Agriculture" in carol.inner_text("#detail h2")
        carol.fill("#group-input", "industry_services")
        carol.click("#propose-group")
        carol.wait_for_selector("li.level-field .row .grp:text-is('industry_services')")
        select(carol, "Agronomy")
        assert carol.inner_text("#group-panel .group-name") == "industry_services"

        # the admin revokes carol's link: her next vote is refused, and the page says why
        admin.click("tr[data-name=carol] .revoke")
        admin.wait_for_selector("tr[data-name=carol] td:text-is('revoked')")
        select(carol, "Soil Science")
        carol.keyboard.press("r")
        carol.wait_for_selector("#lost")
        assert "new link" in carol.inner_text("#lost")
        votes = {v.reviewer for v in store.snapshot().votes.get(node_id(store, "Soil Science"), [])}
        assert votes == set()
    finally:
        stop(server, thread)


def node_id(store: ReviewStore, name: str) -> str:
    return next(row.id for row in store.snapshot().nodes if row.name == name)
