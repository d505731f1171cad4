"""The review as today's taxonomy YAML: what the majority keeps, with every vote written out."""

from __future__ import annotations

from glan.review.rules import NodeView, decide
from glan.taxonomy import Discipline, KnowledgeField, Subfield, Taxonomy

_MODELS = {"field": KnowledgeField, "subfield": Subfield, "discipline": Discipline}


def review_taxonomy(views: dict[str, NodeView]) -> Taxonomy:
    """Imported nodes carry their votes; accepted proposals and renames are folded in.

    Where the app's rule and the YAML rule would disagree (a quorum not reached, an accepted
    proposal), an explicit `status` pins the app's decision so the YAML reads the same.
    Proposals not (yet) accepted stay in the database only.
    """
    built: dict[str, object] = {}
    fields: list[KnowledgeField] = []
    for v in views.values():
        if v.proposal and v.state != "kept" and v.state != "removed-by-ancestor":
            continue
        if v.parent_id is not None and v.parent_id not in built:
            continue  # under a proposal that was not accepted
        votes = {x.reviewer: x.vote for x in v.votes}
        own = v.tally.decision != "remove" if not v.proposal else v.tally.decision == "keep"
        yaml_rule = decide(list(votes.values())).decision != "remove"
        status = (
            v.status
            if v.tally.fixed
            else (None if own == yaml_rule else ("keep" if own else "remove"))
        )
        data = {
            "name": v.name,
            "description": v.description,
            "weight": v.weight,
            "status": status,
            "votes": votes,
        }
        if v.level == "field":
            data["group"] = v.group
        node = _MODELS[v.level].model_validate(data)
        built[v.id] = node
        if v.parent_id is None:
            fields.append(node)  # type: ignore[arg-type]
        else:
            parent = built[v.parent_id]
            (parent.subfields if v.level == "subfield" else parent.disciplines).append(node)  # type: ignore[attr-defined]
    return Taxonomy(fields=fields)
