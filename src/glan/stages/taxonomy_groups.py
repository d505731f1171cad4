"""The GLAN-Test group of a drafted discipline, from its names alone (no model call).

The paper reports its exam in 8 groups; the curated taxonomy adds general capabilities. A name
the curated taxonomy already holds takes that node's group; otherwise a keyword table is read,
first on the discipline's name, then its sub-field's, then its field's. Within one name the
table's order settles a tie: "Chemical Engineering" is applied science before it is chemistry,
"Agricultural Economics" is agriculture before it is economics.
"""

from __future__ import annotations

from functools import cache

import yaml

from glan.stages.taxonomy_names import name_key, words
from glan.taxonomy import Taxonomy, default_taxonomy_text

FALLBACK = "general_capabilities"  # the curated taxonomy's home for skills that fit no science

# (group, word stems) in priority order; a stem matches the start of a (singular) word.
# fmt: off
KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("industry_agriculture", (
        "agri", "agro", "agronom", "farm", "crop", "livestock", "horticult", "forestr", "fisher",
        "aquacult", "soil", "husbandry", "dairy", "poultry", "viticult", "ranch", "veterinar",
        "irrigat", "apicult",
    )),
    ("industry_manufacturing", (
        "manufactur", "automotive", "textile", "industrial", "factory", "mining", "metallurg",
        "construction", "petroleum", "oil", "welding", "machining", "fabricat", "assembly",
        "packaging", "utilit", "power grid", "energy",
    )),
    ("academic_applied_science", (
        "engineer", "medic", "nursing", "pharma", "dentist", "dental", "surgery", "clinical",
        "architect", "comput", "software", "robot", "electronic", "material", "biotech",
        "nanotech", "health", "epidemiolog", "nutrition", "machine learning", "artificial",
        "cybersecurity", "security", "network", "database", "urban planning", "aerospace",
        "technolog", "applied", "data science", "data engineering",
    )),
    ("industry_services", (
        "business", "financ", "bank", "accounting", "marketing", "retail", "hospitality", "touris",
        "hotel", "consult", "insurance", "real estate", "logistic", "transport", "supply chain",
        "human resource", "management", "sale", "customer", "advertis", "journalis",
        "public relation", "media", "entertainment", "restaurant", "commerce", "entrepreneur",
        "service", "investment", "trade",
    )),
    ("academic_formal_science", (
        "math", "algebra", "geometr", "calculus", "statistic", "probabilit", "logic", "topolog",
        "number theory", "combinator", "formal", "set theory", "game theory",
        "theory of computation", "cryptograph", "equation", "operation research",
    )),
    ("academic_natural_science", (
        "physic", "chemi", "biolog", "astro", "geolog", "ecolog", "botan", "zoolog", "genetic",
        "earth", "ocean", "meteorolog", "climat", "neuroscien", "biochem", "optic", "quantum",
        "thermodynamic", "mechanic", "paleontolog", "mineralog", "cosmolog", "evolution",
        "molecular", "cell", "anatom", "physiolog", "natural", "life science", "planet",
        "electromagnet", "space", "environment",
    )),
    ("academic_social_science", (
        "econom", "sociolog", "psycholog", "politic", "anthropolog", "geograph", "law", "legal",
        "juris", "educat", "pedagog", "international relation", "criminolog", "demograph",
        "social", "communication", "government", "public polic", "behavio",
    )),
    ("academic_humanities", (
        "histor", "philosoph", "literat", "language", "religio", "theolog", "ethic", "art",
        "music", "theat", "film", "danc", "classic", "poet", "linguist", "cultur", "archaeolog",
        "humanit", "rhetoric", "aesthetic", "mytholog", "fine", "design", "literary",
    )),
    ("general_capabilities", (
        "writing", "coding", "programming", "reasoning", "everyday", "cooking", "personal",
        "life skill", "home", "travel", "fitness", "parenting", "etiquette", "skill",
    )),
)
# fmt: on


@cache
def curated_groups() -> dict[str, str]:
    """Name key -> group for every node of the curated taxonomy (its own names are settled)."""
    tax = Taxonomy.model_validate(yaml.safe_load(default_taxonomy_text()))
    known: dict[str, str] = {}
    for f in tax.fields:
        if f.group is None:
            continue
        known.setdefault(name_key(f.name), f.group)
        for s in f.subfields:
            known.setdefault(name_key(s.name), f.group)
            for d in s.disciplines:
                known[name_key(d.name)] = f.group
    return known


def keyword_group(name: str) -> str | None:
    """The group of the table's first row with a stem that starts one of the name's words
    (or, for a stem of several words, starts that run of words)."""
    text = " " + " ".join(words(name))
    for group, stems in KEYWORDS:
        if any(f" {stem}" in text for stem in stems):
            return group
    return None


def group_for(field: str, subfield: str, discipline: str) -> str | None:
    """The discipline's group from its own name, then its sub-field's, then its field's."""
    known = curated_groups()
    for name in (discipline, subfield, field):
        group = known.get(name_key(name)) or keyword_group(name)
        if group:
            return group
    return None
