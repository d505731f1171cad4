"""The taxonomy of human knowledge and capabilities: fields > sub-fields > disciplines.

Stored as YAML for people to review. Every node may carry per-reviewer votes (keep/remove);
the majority decides (a tie keeps), an explicit `status` overrides the votes, and a removed
node removes its whole subtree.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from glan.errors import UserError, did_you_mean
from glan.yamlfile import line_of, load_yaml

Vote = Literal["keep", "remove"]
#: GLAN-Test's groups: the paper's eight and the curated taxonomy's general capabilities.
GLAN_TEST_GROUPS = (
    "academic_humanities",
    "academic_social_science",
    "academic_natural_science",
    "academic_applied_science",
    "academic_formal_science",
    "industry_manufacturing",
    "industry_services",
    "industry_agriculture",
    "general_capabilities",
)
GROUP_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")  # as the review app normalises them


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
    _source: str | None = PrivateAttr(None)  # the file it was read from, for errors

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
        """What must be fixed before a run walks the taxonomy: duplicate siblings, empty
        branches, a group that is no label or a misspelt GLAN-Test group, no kept discipline.
        Only what is kept is checked: a removed node is never walked."""
        issues: list[str] = []
        fields = [f for f in self.fields if f.kept]
        _dupes(fields, "fields", issues)
        for f in fields:
            subfields = [s for s in f.subfields if s.kept]
            _dupes(subfields, f"field {f.name!r}", issues)
            _group_problem(f.group, f"field {f.name!r}", issues)
            if not f.subfields:
                issues.append(f"field {f.name!r} has no sub-fields")
            for s in subfields:
                disciplines = [d for d in s.disciplines if d.kept]
                _dupes(disciplines, f"sub-field {f.name}/{s.name}", issues)
                if not s.disciplines:
                    issues.append(f"sub-field {f.name}/{s.name} has no disciplines")
                for d in disciplines:
                    _group_problem(d.group, f"discipline {f.name}/{s.name}/{d.name}", issues)
        if not self.disciplines():
            issues.append("no discipline is kept")
        return issues

    def check(self) -> None:
        """Refuse a taxonomy with problems, in one line: the first problem and how many more
        (the run and `glan taxonomy validate` apply the same rules)."""
        issues = self.problems()
        if not issues:
            return
        more = len(issues) - 1
        source = self._source or "the taxonomy"
        rest = f" (and {more} more: glan taxonomy validate {self._source or 'FILE'} lists them)"
        raise UserError(f"{source}: {issues[0]}{rest if more else ''}")

    def own_groups(self) -> list[str]:
        """Groups of kept nodes that are not GLAN-Test's (a review may add its own)."""
        groups = {f.group for f in self.fields if f.kept and f.group}
        groups |= {d.group for d in self.disciplines() if d.group}
        return sorted(groups - set(GLAN_TEST_GROUPS))

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


def _group_problem(group: str | None, where: str, issues: list[str]) -> None:
    """A group that is not a label, or is one letter or two from a GLAN-Test group (a
    misspelling, which would report its disciplines apart). A group far from all of them is
    a group of the reviewers' own, as the review app allows."""
    if group is None or group in GLAN_TEST_GROUPS:
        return
    if not GROUP_LABEL.fullmatch(group):
        issues.append(
            f"{where}: group {group!r} is not a label (lowercase letters, digits and _, "
            "e.g. academic_humanities)"
        )
        return
    close = did_you_mean(group, GLAN_TEST_GROUPS, cutoff=0.8)
    if close:
        issues.append(f"{where}: group {group!r} is not a GLAN-Test group{close}")


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
        taxonomy = Taxonomy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        line = line_of(path, err["loc"]) if path else None
        raise UserError(f"{source}{f':{line}' if line else ''}: {where}: {err['msg']}") from None
    taxonomy._source = str(path) if path else None
    return taxonomy


def save_taxonomy(taxonomy: Taxonomy, path: Path) -> None:
    from glan.run.files import atomic_write_text

    atomic_write_text(path, taxonomy.to_yaml())
