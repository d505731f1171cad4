"""The review as today's taxonomy YAML: what the majority keeps, with every vote written out.

Where the app's rule and the YAML rule would disagree (a quorum not reached), the export pins
the app's decision with `status:` so `glan generate` reads the same; such a pin is derived from
the votes, not a reviewer's decision, so the file lists it in a comment line
(`# derived-status: [path] status`) and a re-import into the review drops it: votes cast
afterwards still decide. A `status:` that is not listed is a pin someone wrote, and stays one.
"""

from __future__ import annotations

import json

from glan.review.rules import NodeView, decide
from glan.taxonomy import Discipline, KnowledgeField, Subfield, Taxonomy

_MODELS = {"field": KnowledgeField, "subfield": Subfield, "discipline": Discipline}
DERIVED = "# derived-status: "

Pins = dict[tuple[str, ...], str]


def review_taxonomy(views: dict[str, NodeView]) -> Taxonomy:
    return _build(views)[0]


def review_yaml(views: dict[str, NodeView], quorum: int) -> str:
    """The export as written to a file: a header naming the derived pins, then the YAML."""
    tax, pins = _build(views)
    head = [f"# Exported from glan taxonomy review (quorum {quorum})."]
    if pins:  # explained only where there is one to list
        head += [
            "# Each derived-status line below names a status: derived from the votes for glan",
            "# generate; re-imported into the review, votes decide.",
        ]
    head += [
        f"{DERIVED}{json.dumps(list(path), ensure_ascii=False)} {s}" for path, s in pins.items()
    ]
    return "\n".join(head) + "\n" + tax.to_yaml()


def derived_pins(text: str) -> Pins:
    """The derived `status:` pins an export listed in its header (path -> status)."""
    pins: Pins = {}
    for line in text.splitlines():
        if line.startswith(DERIVED):
            path, _, status = line[len(DERIVED) :].rpartition(" ")
            try:
                names = json.loads(path)
            except json.JSONDecodeError:
                continue  # a hand-edited line: the status it names stays a pin
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                pins[tuple(names)] = status
    return pins


def _build(views: dict[str, NodeView]) -> tuple[Taxonomy, Pins]:
    """Imported nodes carry their votes; accepted proposals, renames and group changes are
    folded in. Proposals not (yet) accepted stay in the database only."""
    built: dict[str, object] = {}
    paths: dict[str, tuple[str, ...]] = {}
    pins: Pins = {}
    fields: list[KnowledgeField] = []
    for v in views.values():
        if v.proposal and v.state != "kept" and v.state != "removed-by-ancestor":
            continue
        if v.parent_id is not None and v.parent_id not in built:
            continue  # under a proposal that was not accepted
        votes = {x.reviewer: x.vote for x in v.votes}
        own = v.tally.decision != "remove" if not v.proposal else v.tally.decision == "keep"
        yaml_rule = decide(list(votes.values())).decision != "remove"
        paths[v.id] = (*paths.get(v.parent_id or "", ()), v.name)
        status = v.status if v.tally.fixed else None
        if not v.tally.fixed and own != yaml_rule:
            status = "keep" if own else "remove"
            pins[paths[v.id]] = status
        data = {
            "name": v.name,
            "description": v.description,
            "weight": v.weight,
            "status": status,
            "votes": votes,
        }
        if v.level == "field":
            data["group"] = v.group
        elif v.level == "discipline" and v.own_group:
            data["group"] = v.own_group
        node = _MODELS[v.level].model_validate(data)
        built[v.id] = node
        if v.parent_id is None:
            fields.append(node)  # type: ignore[arg-type]
        else:
            parent = built[v.parent_id]
            (parent.subfields if v.level == "subfield" else parent.disciplines).append(node)  # type: ignore[attr-defined]
    return Taxonomy(fields=fields), pins
