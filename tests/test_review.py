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
from glan.review.app import ServeOptions, create_app
from glan.review.export import derived_pins, review_taxonomy, review_yaml
from glan.review.rules import decide, summary, tree_view
from glan.review.store import ReviewStore
from glan.taxonomy import Taxonomy, load_taxonomy

POST = {"X-Glan-Review": "1"}
LOCAL = "http://127.0.0.1:8765"  # where ServeOptions() binds: the Host the app expects


def client_for(store: ReviewStore, **options) -> TestClient:
    return TestClient(create_app(store, ServeOptions(**options)), base_url=LOCAL)


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


@pytest.fixture
def no_serving(monkeypatch) -> list:
    """`glan taxonomy review` does all but serve: the app it would serve is kept here."""
    import uvicorn

    served: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    return served


def test_the_database_remembers_its_quorum_and_the_export_uses_it(tmp_path, no_serving):
    yaml_path, db = tmp_path / "tax.yaml", tmp_path / "review.sqlite"
    yaml_path.write_text(small_taxonomy().to_yaml())
    runner = CliRunner()
    started = runner.invoke(
        cli_app, ["taxonomy", "review", str(yaml_path), "--db", str(db), "--quorum", "2"]
    )
    assert started.exit_code == 0, started.output
    hint = next(line for line in started.output.splitlines() if line.startswith("when done:"))
    store = ReviewStore(db)
    store.vote(ids(store)["Bread"], "ann", "remove")  # one vote of the two needed
    assert runner.invoke(cli_app, ["taxonomy", "review", "--db", str(db)]).exit_code == 0
    assert store.quorum() == 2  # a restart without --quorum keeps it

    out = tmp_path / "reviewed.yaml"
    command = hint.removeprefix("when done: glan ").replace("reviewed.yaml", str(out)).split()
    result = runner.invoke(cli_app, command)  # the hint as printed, no --quorum in it
    assert result.exit_code == 0, result.output
    assert "Bread" in {d.name for d in load_taxonomy(out).disciplines()}  # undecided stays
    assert runner.invoke(cli_app, [*command, "--quorum", "0"]).exit_code == 0
    assert "Bread" not in {d.name for d in load_taxonomy(out).disciplines()}


def test_a_vote_cast_after_reimporting_an_export_still_decides(store, tmp_path, no_serving):
    store.remember_quorum(2)
    n = ids(store)
    store.vote(n["Bread"], "ann", "remove")  # below quorum: the export pins it kept
    exported = tmp_path / "reviewed.yaml"
    exported.write_text(review_yaml(tree_view(store.snapshot(), 2), 2))
    assert load_taxonomy(exported).fields[1].subfields[0].disciplines[0].status == "keep"
    assert derived_pins(exported.read_text()) == {("Cooking", "Baking", "Bread"): "keep"}

    db = tmp_path / "round2.sqlite"
    result = CliRunner().invoke(
        cli_app, ["taxonomy", "review", str(exported), "--db", str(db), "--quorum", "2"]
    )
    assert result.exit_code == 0, result.output
    again = ReviewStore(db)
    bread = ids(again)["Bread"]
    assert tree_view(again.snapshot(), 2)[bread].state == "kept"  # still what the app showed
    again.vote(bread, "bob", "remove")  # the second vote reaches the quorum
    assert tree_view(again.snapshot(), 2)[bread].state == "removed"
    store.import_taxonomy(load_taxonomy(exported), derived=derived_pins(exported.read_text()))
    store.vote(n["Bread"], "bob", "remove")  # the same, re-imported into the first database
    assert tree_view(store.snapshot(), 2)[n["Bread"]].state == "removed"


def test_a_status_someone_wrote_stays_a_pin_after_a_round_trip(tmp_path):
    tax = small_taxonomy()
    tax.fields[1].subfields[0].disciplines[1].status = "remove"  # Cakes, pinned by hand
    store = ReviewStore(tmp_path / "r.sqlite")
    store.import_taxonomy(tax)
    text = review_yaml(tree_view(store.snapshot()), 0)
    assert derived_pins(text) == {}
    again = ReviewStore(tmp_path / "again.sqlite")
    again.import_taxonomy(load_taxonomy_text(text), derived=derived_pins(text))
    cakes = ids(again)["Cakes"]
    again.vote(cakes, "ann", "keep")
    assert tree_view(again.snapshot())[cakes].state == "removed"


def load_taxonomy_text(text: str) -> Taxonomy:
    import yaml

    return Taxonomy.model_validate(yaml.safe_load(text))


def test_each_discipline_shows_its_group_and_a_voted_change_moves_it(store):
    n = ids(store)
    views = tree_view(store.snapshot())
    assert views[n["Bread"]].group == "general_capabilities"  # from its field
    assert views[n["Linear Algebra"]].group == "academic_formal_science"
    store.remember_quorum(2)
    change = store.propose_group(n["Cooking"], "industry services", "ann")  # normalised
    assert tree_view(store.snapshot(), 2)[n["Bread"]].group == "general_capabilities"
    store.vote(change, "bob", "keep")  # the quorum of two is reached
    views = tree_view(store.snapshot(), 2)
    assert views[n["Bread"]].group == "industry_services"
    assert views[n["Cooking"]].original_group == "general_capabilities"
    assert summary(views)["per_group"] == {"academic_formal_science": 3, "industry_services": 2}
    exported = review_taxonomy(views)
    assert {d.name: d.group for d in exported.disciplines()}["Cakes"] == "industry_services"
    store.vote(change, "cid", "remove")
    store.vote(change, "dan", "remove")  # 2 keep, 2 remove: a tie changes nothing
    assert tree_view(store.snapshot(), 2)[n["Bread"]].group == "general_capabilities"
    with pytest.raises(UserError, match="not on a subfield"):
        store.propose_group(n["Baking"], "industry_services", "ann")
    with pytest.raises(UserError, match="lowercase"):
        store.propose_group(n["Cooking"], "Services!", "ann")


def test_a_group_change_is_proposed_and_voted_from_the_page(store):
    n = ids(store)
    client = client_for(store)
    client.post("/api/name", data={"name": "ann"}, headers=POST)
    r = client.post("/api/group", data={"target": n["Cooking"], "group": "industry_agriculture"})
    assert r.status_code == 403  # not from the page
    r = client.post(
        "/api/group", data={"target": n["Cooking"], "group": "industry_agriculture"}, headers=POST
    )
    assert r.status_code == 200, r.text
    nodes = {x["name"]: x for x in r.json()["nodes"]}
    assert nodes["Bread"]["group"] == "industry_agriculture"  # the proposer's keep decides
    assert nodes["Cooking"]["group_changes"][0]["proposed_by"] == "ann"
    assert "industry_agriculture" in r.json()["groups"]
    exported = client.get("/export.yaml").text
    assert load_taxonomy_text(exported).fields[1].group == "industry_agriculture"
    store.import_taxonomy(load_taxonomy_text(exported))  # the export, back in the same database
    change = nodes["Cooking"]["group_changes"][0]["id"]
    for who in ("bob", "cid"):
        store.vote(change, who, "remove")  # the change is voted down after the re-import
    assert tree_view(store.snapshot())[n["Bread"]].group == "general_capabilities"


def test_a_discipline_keeps_its_own_group_through_review_and_export(tmp_path):
    """A drafted field can mix groups (glan taxonomy build gives such a discipline its own):
    the page shows it, the summary counts it, a reviewer can change it, the export keeps it."""
    tax = small_taxonomy()
    tax.fields[1].subfields[0].disciplines[0].group = "industry_services"  # Bread
    store = ReviewStore(tmp_path / "review.sqlite")
    store.import_taxonomy(tax)
    n = ids(store)
    view = tree_view(store.snapshot())
    assert view[n["Bread"]].group == "industry_services"
    assert view[n["Cakes"]].group == "general_capabilities"  # its field's
    assert summary(view)["per_group"]["industry_services"] == 1
    exported = review_taxonomy(tree_view(store.snapshot()))
    assert exported.fields[1].subfields[0].disciplines[0].group == "industry_services"
    assert exported.fields[1].subfields[0].disciplines[1].group is None
    store.propose_group(n["Cakes"], "industry_manufacturing", "ann")  # the proposer's keep
    assert tree_view(store.snapshot())[n["Cakes"]].group == "industry_manufacturing"
    with pytest.raises(UserError, match="not on a subfield"):
        store.propose_group(n["Baking"], "industry_services", "ann")


def test_export_review_says_what_it_wrote_and_explains_only_what_is_there(store, tmp_path):
    n = ids(store)
    store.vote(n["Cooking"], "ann", "remove")
    store.vote(n["Algebra"], "ann", "remove")
    out = tmp_path / "reviewed.yaml"
    command = ["taxonomy", "export-review", "--db", str(store.path), "--out", str(out)]
    result = CliRunner().invoke(cli_app, command)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote 1 kept discipline to {out} (quorum 0);")
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert header == ["# Exported from glan taxonomy review (quorum 0)."]  # no pin to list
    store.remember_quorum(2)  # ann's votes alone now leave both undecided: pinned as kept
    assert CliRunner().invoke(cli_app, command).exit_code == 0
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert header[1:3] == [
        "# Each derived-status line below names a status: derived from the votes for glan",
        "# generate; re-imported into the review, votes decide.",
    ]
    assert len(header) == 5 and derived_pins(out.read_text()) == {
        ("Cooking",): "keep",
        ("Mathematics", "Algebra"): "keep",
    }


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
