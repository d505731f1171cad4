"""Taxonomy review access: a private link per reviewer, the admin's page, the Host guard, cookies,
the shared token of the open mode, the body cap, and text that stays text."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from glan.cli import app as cli_app
from glan.errors import UserError
from glan.review.app import MAX_BODY, ServeOptions, check_bind, create_app
from glan.review.guard import host_allowed
from glan.review.links import Links, read_names
from glan.review.rules import tree_view
from glan.review.store import ReviewStore
from glan.taxonomy import load_taxonomy

POST = {"X-Glan-Review": "1"}
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    s = ReviewStore(tmp_path / "review.sqlite")
    s.import_taxonomy(load_taxonomy())
    return s


def local_client(store: ReviewStore, **options) -> TestClient:
    return TestClient(create_app(store, ServeOptions(**options)), base_url=LOCAL)


def node(store: ReviewStore, name: str) -> str:
    return next(v.id for v in tree_view(store.snapshot()).values() if v.name == name)


def voters(store: ReviewStore, target: str) -> dict[str, str]:
    return {v.reviewer: v.vote for v in tree_view(store.snapshot())[target].votes}


def holder_of(store: ReviewStore, token: str, **options) -> TestClient:
    """A browser that opened `/?token=...`: from then on its cookie carries the link."""
    app = create_app(store, ServeOptions(per_reviewer=True, **options))
    c = TestClient(app, base_url=LOCAL)
    assert c.get(f"/?token={token}").status_code == 200
    return c


def test_votes_belong_to_the_link_holder_whatever_name_is_claimed(store):
    links = Links(store)
    alice = holder_of(store, links.issue("alice"))
    physics = node(store, "Physics")
    alice.cookies.set("glan_reviewer", "bob")  # a self-declared name counts for nothing here
    r = alice.post("/api/vote", data={"target": physics, "vote": "remove"}, headers=POST)
    assert r.status_code == 200
    assert alice.post("/api/name", data={"name": "bob"}, headers=POST).status_code == 403
    assert voters(store, physics) == {"alice": "remove"}
    assert 'data-mode="links"' in alice.get("/").text and "alice" in alice.get("/").text

    nobody = TestClient(create_app(store, ServeOptions(per_reviewer=True)), base_url=LOCAL)
    nobody.cookies.set("glan_reviewer", "carol")
    assert nobody.get("/").status_code == 403
    assert nobody.get("/?token=made-up").status_code == 403
    assert nobody.get("/api/state").status_code == 403
    r = nobody.post("/api/vote", data={"target": physics, "vote": "keep"}, headers=POST)
    assert r.status_code == 403
    assert voters(store, physics) == {"alice": "remove"}


def test_a_link_is_stored_only_as_a_hash(store):
    token = Links(store).issue("alice")
    with sqlite3.connect(store.path) as con:
        rows = con.execute("SELECT * FROM links").fetchall()
    assert token not in repr(rows)
    assert token.encode() not in b"".join(p.read_bytes() for p in store.path.parent.iterdir())


def test_the_admin_adds_a_reviewer_and_a_revoked_link_is_refused_at_once(store):
    links = Links(store)
    admin = holder_of(store, links.issue_admin())
    bob = holder_of(store, links.issue("bob"))
    assert bob.get("/admin").status_code == 403
    assert bob.post("/api/admin/add", data={"name": "mallory"}, headers=POST).status_code == 403
    assert admin.get("/admin").status_code == 200
    assert 'href="/admin"' in admin.get("/").text and 'href="/admin"' not in bob.get("/").text

    added = admin.post("/api/admin/add", data={"name": "carol"}, headers=POST)
    assert added.status_code == 200, added.text
    carol = holder_of(store, added.json()["token"])
    physics = node(store, "Physics")
    r = carol.post("/api/vote", data={"target": physics, "vote": "keep"}, headers=POST)
    assert r.status_code == 200
    assert voters(store, physics) == {"carol": "keep"}

    assert admin.post("/api/admin/revoke", data={"name": "carol"}).status_code == 403  # no header
    revoked = admin.post("/api/admin/revoke", data={"name": "carol"}, headers=POST)
    assert revoked.status_code == 200
    assert {r["name"]: r["live"] for r in revoked.json()["reviewers"]}["carol"] is False
    assert carol.get("/api/state").status_code == 403
    assert carol.get("/").status_code == 403
    r = carol.post("/api/vote", data={"target": physics, "vote": "remove"}, headers=POST)
    assert r.status_code == 403
    assert voters(store, physics) == {"carol": "keep"}
    assert bob.get("/api/state").status_code == 200  # the others' links still work
    r = admin.post("/api/admin/add", data={"name": "admin"}, headers=POST)
    assert r.status_code == 400 and "admin" in r.json()["error"]


def test_names_come_from_a_list_or_a_file_once_each(tmp_path):
    assert read_names("alice, bob,,alice") == ["alice", "bob"]
    assert read_names("# reviewers\nalice\n\n  bob \n") == ["alice", "bob"]
    with pytest.raises(UserError, match="admin"):
        read_names("alice,Admin")


LINK = re.compile(r"^\s*(\w+)(?: \(you\))?: (http://\S+/\?token=(\S+))$", re.M)


def test_the_cli_prints_one_private_link_each_and_a_restart_keeps_them(tmp_path, monkeypatch):
    import uvicorn

    served: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    db, names = tmp_path / "review.sqlite", tmp_path / "names.txt"
    names.write_text("carol\n")
    runner = CliRunner()
    args = ["taxonomy", "review", "--db", str(db), "--host", "0.0.0.0"]  # links need no token
    first = runner.invoke(
        cli_app, [*args, "--reviewers", "alice,bob", "--reviewers-file", str(names)]
    )
    assert first.exit_code == 0, first.output
    printed = {m[0]: m[2] for m in LINK.findall(first.output)}
    assert sorted(printed) == ["admin", "alice", "bob", "carol"]

    def client(app) -> TestClient:
        return TestClient(app, base_url="http://10.1.2.3:8765")  # any IP: a wildcard bind

    alice = client(served[0])
    assert alice.get(f"/?token={printed['alice']}").status_code == 200
    physics = node(ReviewStore(db), "Physics")
    alice.post("/api/vote", data={"target": physics, "vote": "keep"}, headers=POST)
    assert voters(ReviewStore(db), physics) == {"alice": "keep"}

    again = runner.invoke(cli_app, [*args, "--allow-host", "review.example.org"])  # no --reviewers
    assert again.exit_code == 0, again.output
    reprinted = {m[0]: m[2] for m in LINK.findall(again.output)}
    assert list(reprinted) == ["admin"] and reprinted["admin"] != printed["admin"]
    assert client(served[1]).get(f"/?token={printed['alice']}").status_code == 200
    assert client(served[1]).get(f"/?token={printed['admin']}").status_code == 403
    assert client(served[1]).get("/").status_code == 403  # not back to the open mode
    assert client(served[1]).get(f"/admin?token={reprinted['admin']}").status_code == 403
    proxied = TestClient(served[1], base_url="https://review.example.org")
    assert proxied.get(f"/?token={printed['bob']}").status_code == 200
    admin = client(served[1])
    admin.get(f"/?token={reprinted['admin']}")
    assert admin.get("/admin").status_code == 200
    third = runner.invoke(cli_app, [*args, "--reviewers", "alice,dave"])
    assert "alice: the link from an earlier start still works" in third.output
    assert sorted(m[0] for m in LINK.findall(third.output)) == ["admin", "dave"]


def test_a_foreign_host_is_refused_even_on_loopback_without_a_token(store):
    app = create_app(store)  # the open mode on 127.0.0.1:8765, no token: the rebinding target
    assert TestClient(app, base_url="http://attacker.example:8765").get("/").status_code == 400
    assert (
        TestClient(app, base_url="http://attacker.example:8765").get("/api/state").status_code
        == 400
    )
    r = TestClient(app, base_url="http://127.0.0.1:9999").get("/api/state")
    assert r.status_code == 400 and "--allow-host" in r.text
    for ok in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert TestClient(app, base_url=ok).get("/api/state").status_code == 200, ok
    physics = node(store, "Physics")
    rebound = TestClient(app, base_url="http://attacker.example:8765")
    rebound.post("/api/name", data={"name": "eve"}, headers=POST)
    r = rebound.post("/api/vote", data={"target": physics, "vote": "remove"}, headers=POST)
    assert r.status_code == 400 and voters(store, physics) == {}

    proxied = create_app(store, ServeOptions(allow_hosts=("review.example.org",)))
    assert TestClient(proxied, base_url="https://review.example.org").get("/").status_code == 200


def test_which_hosts_each_bind_serves():
    loop, wild = ServeOptions(), ServeOptions(host="0.0.0.0", port=80)
    named = ServeOptions(host="10.0.0.5", port=8000, allow_hosts=("Review.Example.org",))
    assert host_allowed("LOCALHOST:8765", loop) and not host_allowed("localhost", loop)
    assert not host_allowed("", loop) and not host_allowed("127.0.0.1.nip.io:8765", loop)
    assert host_allowed("192.168.1.7", wild) and host_allowed("[fe80::1]:80", wild)
    assert not host_allowed("evil.example", wild)
    assert host_allowed("10.0.0.5:8000", named) and not host_allowed("10.0.0.6:8000", named)
    assert host_allowed("review.example.org:443", named)


@pytest.mark.parametrize("tls_proxy", [False, True])
def test_cookies_are_httponly_strict_and_secure_behind_tls(store, tls_proxy):
    token = Links(store).issue("alice")
    c = TestClient(
        create_app(store, ServeOptions(per_reviewer=True, tls_proxy=tls_proxy)), base_url=LOCAL
    )
    link_cookie = c.get(f"/?token={token}").headers["set-cookie"]
    c = TestClient(create_app(store, ServeOptions(tls_proxy=tls_proxy)), base_url=LOCAL)
    name_cookie = c.post("/api/name", data={"name": "ann"}, headers=POST).headers["set-cookie"]
    for cookie in (link_cookie, name_cookie):
        attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")}
        assert "httponly" in attributes
        assert attributes["samesite"].strip().lower() == "samesite=strict"
        assert ("secure" in attributes) is tls_proxy


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    with pytest.raises(UserError, match="--token-env"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    result = CliRunner().invoke(cli_app, ["taxonomy", "review", "--host", "0.0.0.0"])
    assert isinstance(result.exception, UserError) and "--token-env" in str(result.exception)


@pytest.fixture
def client(store) -> TestClient:
    c = local_client(store, token="s3cret")
    c.get("/?token=s3cret", follow_redirects=False)
    c.post("/api/name", data={"name": "ann"}, headers=POST)
    return c


def test_bad_token_missing_name_or_foreign_page_change_nothing(store, client):
    target = node(store, "Agronomy")
    stranger = local_client(store, token="s3cret")
    assert stranger.get("/").status_code == 403
    assert stranger.get("/?token=wrong").status_code == 403
    stranger.cookies.set("glan_reviewer", "eve")
    assert (
        stranger.post(
            "/api/vote", data={"target": target, "vote": "remove"}, headers=POST
        ).status_code
        == 403
    )
    nameless = local_client(store)
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
    c = local_client(store)
    assert c.post("/api/name", data={"name": "<b>eve</b>"}, headers=POST).status_code == 200
    page = c.get("/").text
    assert "&lt;b&gt;eve&lt;/b&gt;" in page and "<b>eve</b>" not in page


def test_bodies_over_the_limit_are_refused(store, client):
    target = node(store, "Agronomy")
    big = {"target": target, "vote": "keep", "note": "x" * (MAX_BODY + 1)}
    assert client.post("/api/vote", data=big, headers=POST).status_code == 413
    streamed = (b"note=" + b"x" * 1000 for _ in range(40))  # no Content-Length to check
    form = {**POST, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/api/vote", content=streamed, headers=form).status_code == 413
    long_note = {"target": target, "vote": "keep", "note": "x" * 3000}
    assert client.post("/api/vote", data=long_note, headers=POST).status_code == 400
    assert client.post("/api/name", data={"name": "n" * 41}, headers=POST).status_code == 400
    assert tree_view(store.snapshot())[target].votes == []
