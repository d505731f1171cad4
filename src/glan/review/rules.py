"""The vote rule and what it makes of the whole tree.

Majority of votes cast on a node decides; a tie keeps what is there (an imported node stays, a
proposal is not added); with a quorum K a node with fewer than K votes is undecided (it stays as
it is). Removing a node removes its subtree; votes below a removed node are kept but have no
effect unless the removal is overturned. An explicit `status` from the YAML overrides votes.
A rename or a change of a field's GLAN-Test group is a proposal voted the same way (a tie or a
missing quorum changes nothing); the latest accepted one is in effect. A sub-field and a
discipline report under their field's group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["keep", "remove", "undecided"]
State = Literal["kept", "removed", "removed-by-ancestor", "pending"]
LEVELS = ("field", "subfield", "discipline")

RULES_TEXT = (
    "The majority of votes cast on a node decides; a tie keeps what is there (an existing node "
    "stays, a proposal is not added). {quorum}Removing a node removes its whole subtree; votes "
    "below a removed node are kept but count only if the removal is overturned."
)


def rules_text(quorum: int) -> str:
    q = f"A node needs {quorum} votes before it is decided. " if quorum > 1 else ""
    return RULES_TEXT.format(quorum=q)


@dataclass(frozen=True)
class Tally:
    keep: int
    remove: int
    decision: Decision
    tie: bool = False
    fixed: bool = False  # decided by an explicit YAML status, not by votes


def decide(
    votes: list[str], quorum: int = 0, proposal: bool = False, status: str | None = None
) -> Tally:
    keep = sum(v == "keep" for v in votes)
    remove = sum(v == "remove" for v in votes)
    if status in ("keep", "remove"):
        return Tally(keep, remove, status, fixed=True)  # type: ignore[arg-type]
    if keep + remove < max(quorum, 1 if proposal else 0):
        return Tally(keep, remove, "undecided")
    if keep == remove:
        return Tally(keep, remove, "remove" if proposal else "keep", tie=keep > 0)
    return Tally(keep, remove, "keep" if keep > remove else "remove")


def in_effect(tally: Tally, proposal: bool) -> bool:
    """Whether the node itself stands (ignoring its ancestors)."""
    if proposal:
        return tally.decision == "keep"
    return tally.decision != "remove"


@dataclass
class VoteView:
    reviewer: str
    vote: str
    note: str


@dataclass
class RenameView:
    id: str
    new_name: str
    proposed_by: str
    tally: Tally
    accepted: bool
    votes: list[VoteView]


@dataclass
class GroupChangeView:
    id: str
    group: str
    proposed_by: str
    tally: Tally
    accepted: bool
    votes: list[VoteView]


@dataclass
class NodeView:
    id: str
    parent_id: str | None
    level: str
    name: str  # effective name (after an accepted rename)
    original_name: str
    description: str | None
    weight: float
    group: str | None  # in effect: the field's (after an accepted change), inherited below it
    status: str | None
    proposed_by: str | None
    tally: Tally
    state: State
    votes: list[VoteView]
    renames: list[RenameView] = field(default_factory=list)
    original_group: str | None = None
    own_group: str | None = None  # set on this node itself (a field's, or a discipline's own)
    group_changes: list[GroupChangeView] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    @property
    def proposal(self) -> bool:
        return self.proposed_by is not None


def _tallied(snapshot, target: str, quorum: int) -> tuple[Tally, bool, list[VoteView]]:
    """A proposed change's tally, whether it is accepted, and its votes."""
    votes = snapshot.votes.get(target, [])
    tally = decide([v.vote for v in votes], quorum, proposal=True)
    return tally, tally.decision == "keep", votes


def tree_view(snapshot, quorum: int = 0) -> dict[str, NodeView]:
    """Every node (parents before children) with its tally, state and effective name."""
    views: dict[str, NodeView] = {}
    for row in snapshot.nodes:
        votes = snapshot.votes.get(row.id, [])
        proposal = row.proposed_by is not None
        tally = decide([v.vote for v in votes], quorum, proposal, row.status)
        renames = [
            RenameView(r.id, r.new_name, r.proposed_by, *_tallied(snapshot, r.id, quorum))
            for r in snapshot.renames.get(row.id, [])
        ]
        accepted = [r for r in renames if r.accepted]
        regroups = [
            GroupChangeView(g.id, g.new_group, g.proposed_by, *_tallied(snapshot, g.id, quorum))
            for g in snapshot.regroups.get(row.id, [])
        ]
        regrouped = [g.group for g in regroups if g.accepted]
        parent = views.get(row.parent_id) if row.parent_id else None
        own = (regrouped or [row.group])[-1]
        # A field's group, inherited below it; a discipline may carry its own.
        group = own if parent is None or (row.level == "discipline" and own) else parent.group
        if parent is not None and parent.state in ("removed", "removed-by-ancestor", "pending"):
            state: State = "removed-by-ancestor"
        elif in_effect(tally, proposal):
            state = "kept"
        else:
            state = (
                "pending"
                if proposal and (tally.tie or tally.decision == "undecided")
                else "removed"
            )
        view = NodeView(
            id=row.id,
            parent_id=row.parent_id,
            level=row.level,
            name=accepted[-1].new_name if accepted else row.name,
            original_name=row.name,
            description=row.description,
            weight=row.weight,
            group=group,
            status=row.status,
            proposed_by=row.proposed_by,
            tally=tally,
            state=state,
            votes=votes,
            renames=renames,
            original_group=row.group,
            own_group=own,
            group_changes=regroups,
        )
        views[row.id] = view
        if parent is not None:
            parent.children.append(row.id)
    return views


def summary(views: dict[str, NodeView]) -> dict:
    """What the current majority keeps: disciplines per field and group, no-vote nodes, ties."""
    per_field: dict[str, int] = {}
    per_group: dict[str, int] = {}
    for v in views.values():
        if v.level == "field" and v.state == "kept":
            per_field.setdefault(v.name, 0)
        if v.level != "discipline" or v.state != "kept":
            continue
        sub = views[v.parent_id]  # type: ignore[index]
        fld = views[sub.parent_id]  # type: ignore[index]
        per_field[fld.name] = per_field.get(fld.name, 0) + 1
        group = v.group or "(none)"
        per_group[group] = per_group.get(group, 0) + 1
    live = [v for v in views.values() if v.state != "removed-by-ancestor"]
    return {
        "kept_disciplines": sum(per_field.values()),
        "per_field": per_field,
        "per_group": dict(sorted(per_group.items())),
        "no_votes": [v.id for v in live if not v.votes and not v.tally.fixed],
        "ties": [v.id for v in live if v.tally.tie],
        "pending": [v.id for v in views.values() if v.state == "pending"],
    }
