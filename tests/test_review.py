"""Taxonomy review: the vote rule, the store that loses nothing, the export, and the guards."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from glan.cli import app as cli_app
from glan.errors import UserError
from glan.review.app import MAX_BODY, check_bind, create_app
from glan.review.export import review_taxonomy
from glan.review.rules import decide, tree_view
from glan.review.store import ReviewStore
from glan.taxonomy import Taxonomy, load_taxonomy

POST = {"X-Glan-Review": "1"}


def small_taxonomy() -> Taxonomy:
    return Taxonomy.model_validate(
        {
            "fields": [
                {
                    "name": "Mathematics",
                    "group": "academic_formal_science",
                    "subfields": [
                        {
                            "name": "Algebra",
                            "disciplines": [{"name": "Linear Algebra"}, {"name": "Group Theory"}],
                        },
                        {"name": "Analysis", "disciplines": [{"name": "Real Analysis"}]},
                    ],
                },
                {
                    "name": "Cooking",
                    "group": "general_capabilities",
                    "subfields": [
                        {"name": "Baking", "disciplines": [{"name": "Bread"}, {"name": "Cakes"}]}
                    ],
                },
            ]
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    s = ReviewStore(tmp_path / "review.sqlite")
    s.import_taxonomy(small_taxonomy())
    return s


def ids(store: ReviewStore) -> dict[str, str]:
    return {v.name: v.id for v in tree_view(store.snapshot()).values()}


def test_majority_decides_a_tie_keeps_and_quorum_leaves_a_node_undecided():
    assert decide(["keep", "remove", "remove"]).decision == "remove"
    assert decide(["keep", "keep", "remove"]).decision == "keep"
    tie = decide(["keep", "remove"])
    assert tie.decision == "keep" and tie.tie
    assert decide(["remove"], quorum=2).decision == "undecided"
    assert decide(["remove", "remove"], quorum=2).decision == "remove"
    assert decide(["keep", "remove"], proposal=True).decision == "remove"  # a tie adds nothing
    assert decide([], proposal=True).decision == "undecided"
    assert decide(["keep"], status="remove").decision == "remove"


def test_a_removed_node_removes_its_subtree_and_its_descendants_votes_wait(store):
    n = ids(store)
    store.vote(n["Linear Algebra"], "ann", "keep")
    store.vote(n["Algebra"], "ann", "remove")
    store.vote(n["Algebra"], "bob", "remove")
    views = tree_view(store.snapshot())
    assert views[n["Algebra"]].state == "removed"
    assert views[n["Linear Algebra"]].state == "removed-by-ancestor"
    assert views[n["Linear Algebra"]].tally.keep == 1  # kept, just without effect
    store.vote(n["Algebra"], "cid", "keep")
    store.vote(n["Algebra"], "dan", "keep")
    store.vote(n["Algebra"], "eve", "keep")  # removal overturned: the vote below counts again
    assert tree_view(store.snapshot())[n["Linear Algebra"]].state == "kept"


def test_quorum_keeps_an_undecided_node_and_the_export_says_so(store):
    n = ids(store)
    store.vote(n["Bread"], "ann", "remove")
    assert tree_view(store.snapshot(), quorum=2)[n["Bread"]].state == "kept"
    exported = review_taxonomy(tree_view(store.snapshot(), quorum=2))
    assert "Bread" in {d.name for d in exported.disciplines()}
    assert "Bread" not in {
        d.name for d in review_taxonomy(tree_view(store.snapshot())).disciplines()
    }


def test_node_ids_survive_a_rename_and_a_reimport_of_the_export(store, tmp_path):
    n = ids(store)
    store.vote(n["Cakes"], "ann", "keep")
    rid = store.propose_rename(n["Cakes"], "Cakes and Pastry", "ann")
    store.vote(rid, "bob", "keep")
    views = tree_view(store.snapshot())
    assert views[n["Cakes"]].name == "Cakes and Pastry"
    exported = review_taxonomy(views)
    again = ReviewStore(tmp_path / "review.sqlite")
    added, _ = again.import_taxonomy(exported)
    assert added == 0  # every node is known, the renamed one included
    assert ids(again)["Cakes and Pastry"] == n["Cakes"]
    added, _ = again.import_taxonomy(small_taxonomy())  # the original names still match
    assert added == 0


def test_votes_from_the_yaml_come_in_and_newer_votes_in_the_db_win(tmp_path):
    tax = small_taxonomy()
    tax.fields[1].subfields[0].disciplines[0].votes = {"ann": "remove", "zoe": "keep"}
    store = ReviewStore(tmp_path / "r.sqlite")
    store.import_taxonomy(tax)
    bread = ids(store)["Bread"]
    store.vote(bread, "ann", "keep")
    store.import_taxonomy(tax)
    votes = {v.reviewer: v.vote for v in tree_view(store.snapshot())[bread].votes}
    assert votes == {"ann": "keep", "zoe": "keep"}


def test_many_reviewers_voting_at_once_all_count(store):
    target = ids(store)["Group Theory"]
    reviewers = [f"r{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: ReviewStore(store.path).vote(target, r, "remove"), reviewers))
    view = tree_view(store.snapshot())[target]
    assert view.tally.remove == 24 and view.state == "removed"
    assert sum(e.kind == "remove" for e in store.events()) == 24  # the history has each one


def test_a_proposal_is_added_only_when_accepted_and_then_exported(store):
    n = ids(store)
    pid = store.propose_node(n["Baking"], "Pastry", "ann", "laminated doughs")
    assert tree_view(store.snapshot())[pid].state == "kept"  # the proposer's keep is a majority
    store.vote(pid, "bob", "remove")
    assert tree_view(store.snapshot())[pid].state == "pending"  # a tie adds nothing
    store.vote(pid, "cid", "keep")
    exported = review_taxonomy(tree_view(store.snapshot()))
    assert "Pastry" in {d.name for d in exported.disciplines()}
    with pytest.raises(UserError, match="already"):
        store.propose_node(n["Baking"], "pastry", "bob")
    with pytest.raises(UserError, match="no children"):
        store.propose_node(n["Bread"], "Sourdough", "bob")


def test_export_review_writes_yaml_that_generate_reads(store, tmp_path):
    n = ids(store)
    store.vote(n["Cooking"], "ann", "remove")
    out = tmp_path / "reviewed.yaml"
    runner = CliRunner()
    result = runner.invoke(
        cli_app, ["taxonomy", "export-review", "--db", str(store.path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    tax = load_taxonomy(out)
    assert [d.name for d in tax.disciplines()] == [
        "Linear Algebra",
        "Group Theory",
        "Real Analysis",
    ]
    assert tax.fields[1].votes == {"ann": "remove"}  # the vote itself is in the file
    result = runner.invoke(
        cli_app,
        [
            "generate",
            "--out",
            str(tmp_path / "run"),
            "-n",
            "20",
            "--dry-run",
            "--taxonomy",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "over 3 disciplines" in result.output


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    with pytest.raises(UserError, match="--token-env"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    result = CliRunner().invoke(cli_app, ["taxonomy", "review", "--host", "0.0.0.0"])
    assert isinstance(result.exception, UserError) and "--token-env" in str(result.exception)


@pytest.fixture
def client(store) -> TestClient:
    c = TestClient(create_app(store, token="s3cret"))
    c.get("/?token=s3cret", follow_redirects=False)
    c.post("/api/name", data={"name": "ann"}, headers=POST)
    return c


def test_bad_token_missing_name_or_foreign_page_change_nothing(store, client):
    target = ids(store)["Bread"]
    stranger = TestClient(create_app(store, token="s3cret"))
    assert stranger.get("/").status_code == 403
    assert stranger.get("/?token=wrong").status_code == 403
    stranger.cookies.set("glan_reviewer", "eve")
    assert (
        stranger.post(
            "/api/vote", data={"target": target, "vote": "remove"}, headers=POST
        ).status_code
        == 403
    )
    nameless = TestClient(create_app(store))
    r = nameless.post("/api/vote", data={"target": target, "vote": "remove"}, headers=POST)
    assert r.status_code == 401 and "name" in r.json()["error"]
    assert (
        client.post("/api/vote", data={"target": target, "vote": "remove"}).status_code == 403
    )  # no header
    assert (
        client.post("/api/vote", data={"target": target, "vote": "maybe"}, headers=POST).status_code
        == 400
    )
    assert (
        client.post("/api/vote", data={"target": "nope", "vote": "keep"}, headers=POST).status_code
        == 400
    )
    assert tree_view(store.snapshot())[target].votes == []
    assert (
        client.post(
            "/api/vote", data={"target": target, "vote": "remove"}, headers=POST
        ).status_code
        == 200
    )
    assert [v.reviewer for v in tree_view(store.snapshot())[target].votes] == ["ann"]


def test_a_name_with_markup_is_shown_as_text(store):
    c = TestClient(create_app(store))
    assert c.post("/api/name", data={"name": "<b>eve</b>"}, headers=POST).status_code == 200
    page = c.get("/").text
    assert "&lt;b&gt;eve&lt;/b&gt;" in page and "<b>eve</b>" not in page


def test_bodies_over_the_limit_are_refused(store, client):
    target = ids(store)["Bread"]
    big = {"target": target, "vote": "keep", "note": "x" * (MAX_BODY + 1)}
    assert client.post("/api/vote", data=big, headers=POST).status_code == 413
    streamed = (b"note=" + b"x" * 1000 for _ in range(40))  # no Content-Length to check
    form = {**POST, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/api/vote", content=streamed, headers=form).status_code == 413
    long_note = {"target": target, "vote": "keep", "note": "x" * 3000}
    assert client.post("/api/vote", data=long_note, headers=POST).status_code == 400
    assert client.post("/api/name", data={"name": "n" * 41}, headers=POST).status_code == 400
    assert tree_view(store.snapshot())[target].votes == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: Path, port: int, taxonomy: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "glan", "taxonomy", "review", "--db", str(db), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    proc = subprocess.Popen(
        cmd + ([str(taxonomy)] if taxonomy else []),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stdout.read().decode() if proc.stdout else "server did not start")


def test_a_vote_acknowledged_before_a_kill_is_kept(tmp_path):
    yaml_path = tmp_path / "tax.yaml"
    yaml_path.write_text(small_taxonomy().to_yaml())
    db, port = tmp_path / "review.sqlite", free_port()
    proc = serve(db, port, yaml_path)
    try:
        base = f"http://127.0.0.1:{port}"
        state = httpx.get(f"{base}/api/state").json()
        bread = next(n["id"] for n in state["nodes"] if n["name"] == "Bread")
        cookies = {"glan_reviewer": "ann"}
        r = httpx.post(
            f"{base}/api/vote",
            data={"target": bread, "vote": "remove"},
            headers=POST,
            cookies=cookies,
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute(
            "SELECT reviewer, vote FROM votes WHERE target=?", (bread,)
        ).fetchall() == [("ann", "remove")]
