"""The taxonomy of human knowledge and capabilities: fields > sub-fields > disciplines.

Stored as YAML for people to review. Every node may carry per-reviewer votes (keep/remove);
the majority decides (a tie keeps), an explicit `status` overrides the votes, and a removed
node removes its whole subtree.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glan.config import load_yaml
from glan.errors import UserError

Vote = Literal["keep", "remove"]


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str | None = None
    weight: float = Field(1.0, gt=0)
    status: Vote | None = None
    votes: dict[str, Vote] = Field(default_factory=dict)

    @property
    def kept(self) -> bool:
        if self.status is not None:
            return self.status == "keep"
        removes = sum(v == "remove" for v in self.votes.values())
        return removes <= len(self.votes) - removes


class Discipline(Node):
    group: str | None = Field(
        None, description="GLAN-Test group, where it is not its field's (a drafted field mixes)"
    )


class Subfield(Node):
    disciplines: list[Discipline] = Field(default_factory=list)


class KnowledgeField(Node):
    group: str | None = Field(None, description="GLAN-Test group this field reports under")
    subfields: list[Subfield] = Field(default_factory=list)


class DisciplineRef(BaseModel):
    """A kept discipline with its place in the tree."""

    model_config = ConfigDict(frozen=True)

    field: str
    subfield: str
    name: str
    description: str | None = None
    weight: float = 1.0
    group: str | None = None

    @property
    def path(self) -> str:
        return f"{self.field}/{self.subfield}/{self.name}"


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[KnowledgeField] = Field(default_factory=list)

    def disciplines(self) -> list[DisciplineRef]:
        """Kept disciplines in file order; a removed field or sub-field hides its subtree."""
        out = []
        for f in self.fields:
            if not f.kept:
                continue
            for s in f.subfields:
                if not s.kept:
                    continue
                for d in s.disciplines:
                    if d.kept:
                        out.append(
                            DisciplineRef(
                                field=f.name,
                                subfield=s.name,
                                name=d.name,
                                description=d.description,
                                weight=d.weight,
                                group=d.group or f.group,
                            )
                        )
        return out

    def problems(self) -> list[str]:
        """What a reviewer must fix: duplicate siblings, empty branches, no kept discipline."""
        issues = []
        _dupes(self.fields, "fields", issues)
        for f in self.fields:
            _dupes(f.subfields, f"field {f.name!r}", issues)
            if not f.subfields:
                issues.append(f"field {f.name!r} has no sub-fields")
            for s in f.subfields:
                _dupes(s.disciplines, f"sub-field {f.name}/{s.name}", issues)
                if not s.disciplines:
                    issues.append(f"sub-field {f.name}/{s.name} has no disciplines")
        if not self.disciplines():
            issues.append("no discipline is kept")
        return issues

    def add(self, path: str, description: str | None = None, weight: float = 1.0) -> str:
        """Add Field/Sub-field/Discipline (creating missing parents); returns what was added."""
        parts = [p.strip() for p in path.split("/")]
        if len(parts) != 3 or not all(parts):
            raise UserError(f"expected FIELD/SUBFIELD/DISCIPLINE, got {path!r}")
        fname, sname, dname = parts
        field = next((f for f in self.fields if f.name == fname), None)
        if field is None:
            field = KnowledgeField(name=fname)
            self.fields.append(field)
        sub = next((s for s in field.subfields if s.name == sname), None)
        if sub is None:
            sub = Subfield(name=sname)
            field.subfields.append(sub)
        if any(d.name == dname for d in sub.disciplines):
            raise UserError(f"{path} is already in the taxonomy")
        sub.disciplines.append(Discipline(name=dname, description=description, weight=weight))
        return "/".join(parts)

    def fingerprint(self) -> str:
        text = "\n".join(f"{d.path}|{d.weight}|{d.description}" for d in self.disciplines())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        data = self.model_dump(exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _dupes(nodes: list, where: str, issues: list[str]) -> None:
    seen: set[str] = set()
    for node in nodes:
        key = node.name.casefold()
        if key in seen:
            issues.append(f"{where}: {node.name!r} appears twice")
        seen.add(key)


def default_taxonomy_text() -> str:
    return resources.files("glan.data").joinpath("taxonomy.yaml").read_text(encoding="utf-8")


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """The YAML at `path`, or the curated default shipped with glan."""
    source = str(path) if path else "default taxonomy"
    data = load_yaml(path) if path else yaml.safe_load(default_taxonomy_text())
    if not isinstance(data, dict):
        raise UserError(f"{source}: a taxonomy is a mapping with a 'fields' list")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{source}: {where}: {err['msg']}") from None


def save_taxonomy(taxonomy: Taxonomy, path: Path) -> None:
    from glan.run.files import atomic_write_text

    atomic_write_text(path, taxonomy.to_yaml())
