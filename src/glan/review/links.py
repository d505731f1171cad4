"""Per-reviewer links: one private token per reviewer, so a vote belongs to whoever holds it.

A token is random (192 bits), shown once when it is issued and stored only as its SHA-256 (a
salt adds nothing to a secret this long). Each request looks its token up, so a revoked link is
refused at once. The admin, whoever started the review, holds a link of role `admin`: a new one
at each start (the last start's stops working), and may issue and revoke links while it runs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from glan.errors import UserError
from glan.review.store import ReviewStore, log_event

ADMIN = "admin"
MAX_NAME = 40


@dataclass(frozen=True)
class Holder:
    name: str
    admin: bool


@dataclass(frozen=True)
class ReviewerLink:
    name: str
    role: str
    issued_at: float
    live: bool  # False: every link this reviewer had is revoked


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(c in name for c in ",\n\r\t"):
        raise UserError(f"a reviewer's name is 1 to {MAX_NAME} characters, no commas or tabs")
    if name.casefold() == ADMIN:
        raise UserError(f"{ADMIN!r} is the name of whoever started the review: choose another")
    return name


def read_names(text: str) -> list[str]:
    """Reviewer names from `a,b,c` or a file of one name per line (blank lines and # skipped)."""
    names: list[str] = []
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if part and not part.startswith("#") and part not in names:
            names.append(check_name(part))
    return names


class Links:
    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    def issue(self, name: str, by: str = ADMIN, role: str = "reviewer") -> str:
        """A new link for `name` (their earlier links stop working); returns the token once."""
        name = name if role == "admin" else check_name(name)
        token = secrets.token_urlsafe(24)
        now = time.time()
        with self.store._write() as con:
            con.execute(
                "UPDATE links SET revoked_at=? WHERE reviewer=? AND revoked_at IS NULL", (now, name)
            )
            con.execute(
                "INSERT INTO links VALUES(?,?,?,?,NULL)", (token_hash(token), name, role, now)
            )
            log_event(con, by, None, "link", f"new link for {name}")
        return token

    def issue_admin(self) -> str:
        return self.issue(ADMIN, by=ADMIN, role="admin")

    def revoke(self, name: str, by: str = ADMIN) -> int:
        if name == ADMIN:
            raise UserError("the admin's link is replaced at each start, not revoked")
        with self.store._write() as con:
            n = con.execute(
                "UPDATE links SET revoked_at=? WHERE reviewer=? AND revoked_at IS NULL",
                (time.time(), name),
            ).rowcount
            if n == 0:
                raise UserError(f"{name!r} has no live link")
            log_event(con, by, None, "revoke", f"link of {name}")
        return n

    def holder(self, token: str | None) -> Holder | None:
        """Who holds this token, if it is a live link."""
        if not token:
            return None
        con = self.store._connect()
        try:
            row = con.execute(
                "SELECT reviewer, role FROM links WHERE hash=? AND revoked_at IS NULL",
                (token_hash(token),),
            ).fetchone()
        finally:
            con.close()
        return Holder(row[0], row[1] == "admin") if row else None

    def reviewers(self) -> list[ReviewerLink]:
        con = self.store._connect()
        try:
            rows = con.execute(
                "SELECT reviewer, role, MAX(created_at), SUM(revoked_at IS NULL) FROM links "
                "GROUP BY reviewer ORDER BY MIN(created_at)"
            ).fetchall()
        finally:
            con.close()
        return [ReviewerLink(name, role, at, live > 0) for name, role, at, live in rows]

    def live_names(self) -> set[str]:
        return {r.name for r in self.reviewers() if r.live}

    def any(self) -> bool:
        return bool(self.reviewers())
