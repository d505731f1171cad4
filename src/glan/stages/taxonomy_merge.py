"""Several drafted taxonomies made into one that needs little review.

A small model's drafts overlap: "Physics" stands under "Academic Sciences" in one and under
"Science and Technology" in the next, "Humanities" beside "Arts and Humanities", and a field
called "Broad areas" holds whatever the prompt's wording suggested. Left as they are, the
generation budget is spent on one discipline several times. So:

- fields that mean the same are merged: the same words once filler ("academic", "general") is
  set aside, or disciplines that are mostly the same with one name's words inside the other's
  ("Sciences" in "Science and Technology"), or a large shared majority of disciplines;
- fields that are not fields ("Other", "Miscellaneous", "General", "Broad areas") are dropped;
- each discipline is kept once (case, punctuation, "and"/"&" and plurals aside), under the field
  it was listed under most often (ties: first seen), in that field's sub-field it was listed
  under most often; the first spelling is kept;
- each discipline gets its GLAN-Test group (glan.stages.taxonomy_groups).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from glan.stages.hygiene import is_debris, tidy
from glan.stages.taxonomy_groups import FALLBACK, group_for
from glan.stages.taxonomy_names import name_key, words
from glan.taxonomy import Discipline, KnowledgeField, Subfield, Taxonomy

# Words that do not tell one field from another ("Academic Sciences" is "Sciences").
# fmt: off
_FILLER = frozenset({
    "academic", "academia", "general", "broad", "main", "major", "core", "key", "other",
    "various", "miscellaneous", "misc", "more", "additional", "study", "of", "in", "knowledge",
    "human",
})
# Words that name a level of the tree itself: a field named only by these is no field.
_STRUCTURAL = frozenset({
    "area", "sub", "subarea", "field", "subfield", "faculty", "department", "category", "topic",
    "subject", "domain", "discipline", "branch", "section", "sector", "group", "uncategorized",
    "unclassified", "etc",
})
# fmt: on
SAME_CONTENT = 0.5  # share of the smaller field's disciplines the other one also lists
SAME_CONTENT_MIN = 3  # ... and at least this many, for fields whose names share nothing


class MergeReport(BaseModel):
    """What merging the drafts changed, for the person who reviews the result."""

    drafts: int
    listed: int  # disciplines listed across the drafts, repeats included
    disciplines: int  # distinct disciplines kept
    merged_fields: list[tuple[str, str]]  # (field kept, field merged into it)
    duplicate_disciplines: int
    non_fields: list[str]
    dropped_disciplines: int  # listed only under a non-field

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        text = (
            f"merged {n(len(self.merged_fields), 'field')}, "
            f"{n(self.duplicate_disciplines, 'duplicate discipline')}, "
            f"dropped {n(len(self.non_fields), 'non-field')}"
        )
        if self.dropped_disciplines:
            text += f" (and {n(self.dropped_disciplines, 'discipline')} listed only there)"
        return text


@dataclass
class _Field:
    name: str
    words: frozenset[str]
    disciplines: set[str] = field(default_factory=set)


@dataclass
class _Entry:
    """One discipline as one draft listed it."""

    field_name: str
    subfield: str
    discipline: str

    def __post_init__(self) -> None:
        self.field = name_key(self.field_name)
        self.subfield_key = name_key(self.subfield)
        self.key = name_key(self.discipline)


def field_words(name: str) -> frozenset[str]:
    return frozenset(words(name)) - _FILLER


def is_non_field(name: str) -> bool:
    return not (field_words(name) - _STRUCTURAL)


def _entries(drafts: list[dict[str, Any]]) -> list[_Entry]:
    out = []
    for draft in drafts:
        for f in draft.get("fields") or []:
            for s in f.get("subfields") or []:
                for d in s.get("disciplines") or []:
                    fname, sname, dname = tidy(f["name"]), tidy(s["name"]), tidy(d)
                    if any(is_debris(x) for x in (fname, sname, dname)):
                        continue
                    entry = _Entry(fname, sname, dname)
                    if entry.key and entry.field:
                        out.append(entry)
    return out


def _same_field(a: _Field, b: _Field) -> bool:
    if a.words == b.words:
        return True
    shared = len(a.disciplines & b.disciplines)
    smaller = min(len(a.disciplines), len(b.disciplines)) or 1
    if shared / smaller < SAME_CONTENT:
        return False
    return a.words <= b.words or b.words <= a.words or shared >= SAME_CONTENT_MIN


def _cluster(fields: dict[str, _Field]) -> dict[str, str]:
    """Field key -> the key of the first-seen field it is merged into."""
    root = {k: k for k in fields}

    def find(k: str) -> str:
        while root[k] != k:
            root[k] = root[root[k]]
            k = root[k]
        return k

    keys = list(fields)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            ra, rb = find(a), find(b)
            if ra != rb and _same_field(fields[a], fields[b]):
                first, second = sorted((ra, rb), key=keys.index)
                root[second] = first
    return {k: find(k) for k in keys}


def _most_often(counts: Counter[str], order: list[str]) -> str:
    """The most counted item; a tie goes to the one first in `order`."""
    best = max(counts.values())
    return next(x for x in order if counts.get(x) == best)


def merge_drafts(drafts: list[dict[str, Any]]) -> tuple[Taxonomy, MergeReport]:
    entries = _entries(drafts)
    fields: dict[str, _Field] = {}
    for e in entries:
        if e.field not in fields:
            fields[e.field] = _Field(e.field_name, field_words(e.field_name))
        fields[e.field].disciplines.add(e.key)
    non_fields = [f.name for f in fields.values() if is_non_field(f.name)]
    real = {k: f for k, f in fields.items() if not is_non_field(f.name)}
    into = _cluster(real)
    kept_entries = [e for e in entries if e.field in real]
    field_order = [into[e.field] for e in kept_entries]

    by_discipline: dict[str, list[_Entry]] = {}
    for e in kept_entries:
        by_discipline.setdefault(e.key, []).append(e)
    tree: dict[str, dict[str, list[tuple[str, str]]]] = {}  # field -> subfield -> disciplines
    subfield_names: dict[tuple[str, str], str] = {}
    for e in kept_entries:  # sub-field spellings, first seen within the merged field
        subfield_names.setdefault((into[e.field], e.subfield_key), e.subfield)
    for key, listed in by_discipline.items():
        homes = [into[e.field] for e in listed]
        home = _most_often(Counter(homes), homes)
        there = [e for e in listed if into[e.field] == home]
        sub = _most_often(Counter(e.subfield_key for e in there), [e.subfield_key for e in there])
        tree.setdefault(home, {}).setdefault(sub, []).append((listed[0].discipline, key))

    tax = Taxonomy()
    for fkey in dict.fromkeys(field_order):  # merged fields in first-seen order
        if fkey not in tree:
            continue
        fname = real[fkey].name
        kf = KnowledgeField(name=fname)
        subs_in_order = dict.fromkeys(e.subfield_key for e in kept_entries if into[e.field] == fkey)
        for skey in subs_in_order:
            if skey in tree[fkey]:
                sname = subfield_names[(fkey, skey)]
                kf.subfields.append(
                    Subfield(
                        name=sname,
                        disciplines=[
                            Discipline(name=d, group=group_for(fname, sname, d))
                            for d, _ in tree[fkey][skey]
                        ],
                    )
                )
        _settle_groups(kf)
        tax.fields.append(kf)

    listed_only_under_non_fields = {e.key for e in entries} - set(by_discipline)
    merged = [(real[into[k]].name, real[k].name) for k in real if into[k] != k]
    report = MergeReport(
        drafts=len(drafts),
        listed=len(entries),
        disciplines=len(by_discipline),
        merged_fields=merged,
        duplicate_disciplines=len(kept_entries) - len(by_discipline),
        non_fields=non_fields,
        dropped_disciplines=len(listed_only_under_non_fields),
    )
    return tax, report


def _settle_groups(kf: KnowledgeField) -> None:
    """Every discipline grouped: one its names left open takes its sub-field's (then field's)
    most common group. The field carries its most common group, and a discipline keeps its
    own only where it differs, so the YAML reads short and the field's group stays meaningful
    to tools that read groups per field."""
    everyone = [d for s in kf.subfields for d in s.disciplines]
    for s in kf.subfields:
        for d in s.disciplines:
            if d.group is None:
                d.group = _common([x.group for x in s.disciplines]) or _common(
                    [x.group for x in everyone]
                )
    kf.group = _common([d.group for d in everyone]) or FALLBACK
    for d in everyone:
        d.group = None if d.group in (None, kf.group) else d.group


def _common(groups: list[str | None]) -> str | None:
    counts = Counter(g for g in groups if g)
    return _most_often(counts, [g for g in groups if g]) if counts else None
