"""Taxonomy review in a real browser: two reviewers at once, removal, proposals, export."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from typer.testing import CliRunner

from glan.cli import app as cli_app
from glan.review.app import create_app
from glan.review.store import ReviewStore
from glan.taxonomy import load_taxonomy

SCRIPT_NOTE = "<script>window.pwned = 1</script> & <b>bold?</b>"


@pytest.fixture(scope="module")
def review_url(tmp_path_factory) -> Iterator[str]:
    """The app on the shipped default taxonomy, served by uvicorn on a free loopback port."""
    store = ReviewStore(tmp_path_factory.mktemp("review") / "review.sqlite")
    store.import_taxonomy(load_taxonomy())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(5)


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
    assert SCRIPT_NOTE in bob.inner_text("#detail .voters")
    assert bob.evaluate("window.pwned") is None

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
