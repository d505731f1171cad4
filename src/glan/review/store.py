"""Review votes in SQLite: WAL, one short transaction per write, stable node ids.

A node's id is made once, when it is first imported or proposed, and never changes: a rename is
a proposal on top of the node, and a re-import matches nodes by parent and by any name they have
had (original or proposed), so votes survive both. Every write is also appended to `events`, so
a changed vote still shows in the history. A field's GLAN-Test group changes the same way: a
proposal (`rg-` id) voted like a rename. The database also remembers its quorum (`meta`), so the
export decides as the app showed, and holds the per-reviewer links (see `links.py`).
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from glan.errors import UserError
from glan.review.rules import LEVELS, VoteView
from glan.taxonomy import Taxonomy

GROUP_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
Path3 = tuple[str, ...]  # a node's names from its field down

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
  id TEXT PRIMARY KEY, parent_id TEXT, level TEXT NOT NULL, name TEXT NOT NULL,
  description TEXT, weight REAL NOT NULL DEFAULT 1.0, grp TEXT, status TEXT,
  position INTEGER NOT NULL, proposed_by TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS renames(
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, new_name TEXT NOT NULL,
  proposed_by TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS regroups(
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, new_group TEXT NOT NULL,
  proposed_by TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS links(
  hash TEXT PRIMARY KEY, reviewer TEXT NOT NULL, role TEXT NOT NULL, created_at REAL NOT NULL,
  revoked_at REAL);
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


@dataclass(frozen=True)
class RegroupRow:
    id: str
    node_id: str
    new_group: str
    proposed_by: str


@dataclass
class Snapshot:
    nodes: list[NodeRow]  # parents before children, siblings in order
    renames: dict[str, list[RenameRow]]
    votes: dict[str, list[VoteView]]
    regroups: dict[str, list[RegroupRow]] = field(default_factory=dict)


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

    def import_taxonomy(
        self, tax: Taxonomy, source: str = "import", derived: dict[Path3, str] | None = None
    ) -> tuple[int, int]:
        """Merge a taxonomy in: known nodes keep their id and votes; returns (added, matched).

        `derived` names the `status:` pins an export wrote from the votes (path -> status): they
        are not kept as pins, so votes cast after the re-import still decide.
        """
        added = matched = 0
        derived = derived or {}

        def status(node, path: Path3) -> str | None:
            return None if derived.get(path) == node.status else node.status

        with self._write() as con:
            for fpos, f in enumerate(tax.fields):
                fp = (f.name,)
                fid, new = self._upsert(con, None, "field", f, fpos, f.group, status(f, fp))
                added, matched = added + new, matched + (not new)
                for spos, s in enumerate(f.subfields):
                    sp = (*fp, s.name)
                    sid, new = self._upsert(con, fid, "subfield", s, spos, None, status(s, sp))
                    added, matched = added + new, matched + (not new)
                    for dpos, d in enumerate(s.disciplines):
                        dp = (*sp, d.name)
                        _, new = self._upsert(
                            con, sid, "discipline", d, dpos, d.group, status(d, dp)
                        )
                        added, matched = added + new, matched + (not new)
            log_event(con, source, None, "import", f"{added} new, {matched} known nodes")
        return added, matched

    def _upsert(self, con, parent_id, level, node, position, group, status) -> tuple[str, bool]:
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
                    status,
                    position,
                    now,
                ),
            )
        else:
            if con.execute(
                "SELECT 1 FROM regroups WHERE node_id=? AND new_group=?", (node_id, group)
            ).fetchone():
                group = None  # the export of a change voted here: its votes keep deciding
            con.execute(
                "UPDATE nodes SET description=?, weight=?, grp=COALESCE(?, grp), status=? WHERE id=?",
                (node.description, node.weight, group, status, node_id),
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
            log_event(con, reviewer, target, vote or "withdraw", note)

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
            log_event(con, reviewer, node_id, "propose", name)
        return node_id

    def propose_rename(self, node_id: str, new_name: str, reviewer: str) -> str:
        with self._write() as con:
            if con.execute("SELECT 1 FROM nodes WHERE id=?", (node_id,)).fetchone() is None:
                raise UserError(f"no node {node_id!r}")
            return _change(con, "renames", node_id, new_name, reviewer)

    def propose_group(self, node_id: str, group: str, reviewer: str) -> str:
        """A change of a field's GLAN-Test group (its disciplines report under it), or of one
        discipline's own (a drafted field can mix groups), voted on."""
        group = group.strip().lower().replace(" ", "_")
        if not GROUP_RE.fullmatch(group):
            raise UserError(
                "a group is 1 to 40 lowercase letters, digits or _ (e.g. academic_humanities)"
            )
        with self._write() as con:
            row = con.execute("SELECT level FROM nodes WHERE id=?", (node_id,)).fetchone()
            if row is None:
                raise UserError(f"no node {node_id!r}")
            if row[0] == "subfield":
                raise UserError(
                    "a group is set on a field (its disciplines report under it) or on one "
                    "discipline, not on a subfield"
                )
            return _change(con, "regroups", node_id, group, reviewer)

    def remember_quorum(self, quorum: int | None) -> int:
        """The quorum of this review: stored at the first start, changed only when one is given."""
        if quorum is not None and quorum < 0:
            raise UserError("--quorum is 0 or more")
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key='quorum'").fetchone()
            if quorum is None:
                if row is not None:
                    return int(row[0])
                quorum = 0
            con.execute(
                "INSERT INTO meta VALUES('quorum', ?) ON CONFLICT(key) DO UPDATE "
                "SET value=excluded.value",
                (str(quorum),),
            )
            if row is None or int(row[0]) != quorum:
                log_event(con, "admin", None, "quorum", str(quorum))
        return quorum

    def quorum(self) -> int:
        con = self._connect()
        try:
            row = con.execute("SELECT value FROM meta WHERE key='quorum'").fetchone()
        finally:
            con.close()
        return int(row[0]) if row else 0

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
            regroups: dict[str, list[RegroupRow]] = {}
            for r in con.execute(
                "SELECT id, node_id, new_group, proposed_by FROM regroups ORDER BY created_at"
            ):
                regroups.setdefault(r[1], []).append(RegroupRow(*r))
            votes: dict[str, list[VoteView]] = {}
            for t, who, v, note in con.execute(
                "SELECT target, reviewer, vote, note FROM votes ORDER BY at"
            ):
                votes.setdefault(t, []).append(VoteView(who, v, note))
            con.execute("COMMIT")
        finally:
            con.close()
        return Snapshot(_parents_first([NodeRow(*r) for r in rows]), renames, votes, regroups)

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


_CHANGES = {"renames": ("rn-", "rename"), "regroups": ("rg-", "group")}


def _change(con: sqlite3.Connection, table: str, node_id: str, value: str, reviewer: str) -> str:
    """A proposed change of a node (a rename, a group), with the proposer's keep vote."""
    prefix, kind = _CHANGES[table]
    cid = prefix + uuid.uuid4().hex[:12]
    now = time.time()
    con.execute(f"INSERT INTO {table} VALUES(?,?,?,?,?)", (cid, node_id, value, reviewer, now))
    con.execute("INSERT INTO votes VALUES(?,?,'keep','',?)", (cid, reviewer, now))
    log_event(con, reviewer, node_id, kind, value)
    return cid


def _target_exists(con: sqlite3.Connection, target: str) -> bool:
    table = {prefix: t for t, (prefix, _) in _CHANGES.items()}.get(target[:3], "nodes")
    return con.execute(f"SELECT 1 FROM {table} WHERE id=?", (target,)).fetchone() is not None


def log_event(
    con: sqlite3.Connection, reviewer: str, target: str | None, kind: str, detail: str
) -> None:
    con.execute(
        "INSERT INTO events(at, reviewer, target, kind, detail) VALUES(?,?,?,?,?)",
        (time.time(), reviewer, target, kind, detail),
    )
