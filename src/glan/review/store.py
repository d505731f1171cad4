"""Review votes in SQLite: WAL, one short transaction per write, stable node ids.

A node's id is made once, when it is first imported or proposed, and never changes: a rename is
a proposal on top of the node, and a re-import matches nodes by parent and by any name they have
had (original or proposed), so votes survive both. Every write is also appended to `events`, so
a changed vote still shows in the history.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glan.errors import UserError
from glan.review.rules import LEVELS, VoteView
from glan.taxonomy import Taxonomy

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
  id TEXT PRIMARY KEY, parent_id TEXT, level TEXT NOT NULL, name TEXT NOT NULL,
  description TEXT, weight REAL NOT NULL DEFAULT 1.0, grp TEXT, status TEXT,
  position INTEGER NOT NULL, proposed_by TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS renames(
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, new_name TEXT NOT NULL,
  proposed_by TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS votes(
  target TEXT NOT NULL, reviewer TEXT NOT NULL, vote TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
  at REAL NOT NULL, PRIMARY KEY(target, reviewer));
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, reviewer TEXT NOT NULL,
  target TEXT, kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""


@dataclass(frozen=True)
class NodeRow:
    id: str
    parent_id: str | None
    level: str
    name: str
    description: str | None
    weight: float
    group: str | None
    status: str | None
    proposed_by: str | None


@dataclass(frozen=True)
class RenameRow:
    id: str
    node_id: str
    new_name: str
    proposed_by: str


@dataclass
class Snapshot:
    nodes: list[NodeRow]  # parents before children, siblings in order
    renames: dict[str, list[RenameRow]]
    votes: dict[str, list[VoteView]]


@dataclass(frozen=True)
class Event:
    seq: int
    at: float
    reviewer: str
    target: str | None
    kind: str
    detail: str


class ReviewStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA synchronous=FULL")  # an acknowledged vote is on disk
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- writes -----------------------------------------------------------------------------

    def import_taxonomy(self, tax: Taxonomy, source: str = "import") -> tuple[int, int]:
        """Merge a taxonomy in: known nodes keep their id and votes; returns (added, matched)."""
        added = matched = 0
        with self._write() as con:
            for fpos, f in enumerate(tax.fields):
                fid, new = self._upsert(con, None, "field", f, fpos, f.group)
                added, matched = added + new, matched + (not new)
                for spos, s in enumerate(f.subfields):
                    sid, new = self._upsert(con, fid, "subfield", s, spos, None)
                    added, matched = added + new, matched + (not new)
                    for dpos, d in enumerate(s.disciplines):
                        _, new = self._upsert(con, sid, "discipline", d, dpos, None)
                        added, matched = added + new, matched + (not new)
            _event(con, source, None, "import", f"{added} new, {matched} known nodes")
        return added, matched

    def _upsert(self, con, parent_id, level, node, position, group) -> tuple[str, bool]:
        node_id = _find_child(con, parent_id, node.name)
        now = time.time()
        created = node_id is None
        if node_id is None:
            node_id = uuid.uuid4().hex[:12]
            con.execute(
                "INSERT INTO nodes VALUES(?,?,?,?,?,?,?,?,?,NULL,?)",
                (
                    node_id,
                    parent_id,
                    level,
                    node.name,
                    node.description,
                    node.weight,
                    group,
                    node.status,
                    position,
                    now,
                ),
            )
        else:
            con.execute(
                "UPDATE nodes SET description=?, weight=?, grp=COALESCE(?, grp), status=? WHERE id=?",
                (node.description, node.weight, group, node.status, node_id),
            )
        for reviewer, vote in node.votes.items():  # votes already in the db are newer: they win
            con.execute(
                "INSERT OR IGNORE INTO votes VALUES(?,?,?,'',?)", (node_id, reviewer, vote, now)
            )
        return node_id, created

    def vote(self, target: str, reviewer: str, vote: str | None, note: str = "") -> None:
        """Record (or with vote=None withdraw) one reviewer's vote, in its own transaction."""
        if vote not in ("keep", "remove", None):
            raise UserError(f"a vote is keep or remove, not {vote!r}")
        with self._write() as con:
            if not _target_exists(con, target):
                raise UserError(f"no node or proposal {target!r}")
            if vote is None:
                con.execute("DELETE FROM votes WHERE target=? AND reviewer=?", (target, reviewer))
            else:
                con.execute(
                    "INSERT INTO votes VALUES(?,?,?,?,?) ON CONFLICT(target, reviewer) DO UPDATE "
                    "SET vote=excluded.vote, note=excluded.note, at=excluded.at",
                    (target, reviewer, vote, note, time.time()),
                )
            _event(con, reviewer, target, vote or "withdraw", note)

    def propose_node(
        self, parent_id: str | None, name: str, reviewer: str, description: str | None = None
    ) -> str:
        """A new node under `parent_id` (None: a new field); the proposer's keep vote comes with it."""
        with self._write() as con:
            level = "field"
            if parent_id is not None:
                row = con.execute("SELECT level FROM nodes WHERE id=?", (parent_id,)).fetchone()
                if row is None:
                    raise UserError(f"no node {parent_id!r}")
                if row[0] == "discipline":
                    raise UserError("a discipline has no children; propose under its sub-field")
                level = LEVELS[LEVELS.index(row[0]) + 1]
            if _find_child(con, parent_id, name) is not None:
                raise UserError(f"{name!r} is already there")
            (pos,) = con.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM nodes WHERE parent_id IS ?",
                (parent_id,),
            ).fetchone()
            node_id = uuid.uuid4().hex[:12]
            now = time.time()
            con.execute(
                "INSERT INTO nodes VALUES(?,?,?,?,?,1.0,NULL,NULL,?,?,?)",
                (node_id, parent_id, level, name, description, pos, reviewer, now),
            )
            con.execute("INSERT INTO votes VALUES(?,?,'keep','',?)", (node_id, reviewer, now))
            _event(con, reviewer, node_id, "propose", name)
        return node_id

    def propose_rename(self, node_id: str, new_name: str, reviewer: str) -> str:
        with self._write() as con:
            if con.execute("SELECT 1 FROM nodes WHERE id=?", (node_id,)).fetchone() is None:
                raise UserError(f"no node {node_id!r}")
            rid = "rn-" + uuid.uuid4().hex[:12]
            now = time.time()
            con.execute(
                "INSERT INTO renames VALUES(?,?,?,?,?)", (rid, node_id, new_name, reviewer, now)
            )
            con.execute("INSERT INTO votes VALUES(?,?,'keep','',?)", (rid, reviewer, now))
            _event(con, reviewer, node_id, "rename", new_name)
        return rid

    # -- reads ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        con = self._connect()
        try:
            con.execute("BEGIN")  # one consistent read
            rows = con.execute(
                "SELECT id, parent_id, level, name, description, weight, grp, status, proposed_by "
                "FROM nodes ORDER BY position, created_at"
            ).fetchall()
            renames: dict[str, list[RenameRow]] = {}
            for r in con.execute(
                "SELECT id, node_id, new_name, proposed_by FROM renames ORDER BY created_at"
            ):
                renames.setdefault(r[1], []).append(RenameRow(*r))
            votes: dict[str, list[VoteView]] = {}
            for t, who, v, note in con.execute(
                "SELECT target, reviewer, vote, note FROM votes ORDER BY at"
            ):
                votes.setdefault(t, []).append(VoteView(who, v, note))
            con.execute("COMMIT")
        finally:
            con.close()
        return Snapshot(_parents_first([NodeRow(*r) for r in rows]), renames, votes)

    def events(self, limit: int = 200) -> list[Event]:
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT * FROM events ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        finally:
            con.close()
        return [Event(*r) for r in rows]


def _parents_first(rows: list[NodeRow]) -> list[NodeRow]:
    children: dict[str | None, list[NodeRow]] = {}
    for r in rows:
        children.setdefault(r.parent_id, []).append(r)
    out: list[NodeRow] = []

    def walk(parent: str | None) -> None:
        for r in children.get(parent, []):
            out.append(r)
            walk(r.id)

    walk(None)
    return out


def _find_child(con: sqlite3.Connection, parent_id: str | None, name: str) -> str | None:
    """The child of `parent_id` that has (or has been proposed to have) this name."""
    key = name.strip().casefold()
    for node_id, own in con.execute(
        "SELECT id, name FROM nodes WHERE parent_id IS ?", (parent_id,)
    ):
        if own.casefold() == key:
            return node_id
    for node_id, new_name in con.execute(
        "SELECT r.node_id, r.new_name FROM renames r JOIN nodes n ON n.id = r.node_id "
        "WHERE n.parent_id IS ? ORDER BY r.created_at DESC",
        (parent_id,),
    ):
        if new_name.casefold() == key:
            return node_id
    return None


def _target_exists(con: sqlite3.Connection, target: str) -> bool:
    table = "renames" if target.startswith("rn-") else "nodes"
    return con.execute(f"SELECT 1 FROM {table} WHERE id=?", (target,)).fetchone() is not None


def _event(
    con: sqlite3.Connection, reviewer: str, target: str | None, kind: str, detail: str
) -> None:
    con.execute(
        "INSERT INTO events(at, reviewer, target, kind, detail) VALUES(?,?,?,?,?)",
        (time.time(), reviewer, target, kind, detail),
    )
