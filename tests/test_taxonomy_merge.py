"""Merging drafted taxonomies: near-same names are one, fields that mean the same are one,
non-fields go, and each discipline gets a GLAN-Test group from its names."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from glan.stages.taxonomy_groups import group_for
from glan.stages.taxonomy_merge import is_non_field, merge_drafts
from glan.stages.taxonomy_names import name_key
from glan.taxonomy import Taxonomy


def draft(**fields: dict[str, list[str]]) -> dict:
    """draft(Field={"Sub-field": ["Discipline", ...]}, ...), underscores read as spaces."""
    return {
        "fields": [
            {
                "name": name.replace("_", " "),
                "subfields": [{"name": s, "disciplines": ds} for s, ds in subs.items()],
            }
            for name, subs in fields.items()
        ]
    }


def test_a_discipline_is_kept_once_under_the_field_that_lists_it_most():
    tax, report = merge_drafts(
        [
            draft(Humanities={"Thought": ["Logic"]}),
            draft(Formal_Sciences={"Mathematics": ["logic", "Algebra"]}),
            draft(Formal_Sciences={"Reasoning": ["Logic."], "Mathematics": ["Algebras"]}),
            draft(Humanities={"Arts": ["Arts & Crafts"]}, Trades={"Making": ["arts and craft"]}),
        ]
    )
    paths = [d.path for d in tax.disciplines()]
    # Logic: twice under Formal Sciences (once per sub-field: the first seen wins), once under
    # Humanities; Arts & Crafts: once under each field, so the first seen wins. The first
    # spelling stays.
    assert paths == [
        "Humanities/Arts/Arts & Crafts",
        "Formal Sciences/Mathematics/Logic",
        "Formal Sciences/Mathematics/Algebra",
    ]
    assert report.duplicate_disciplines == 4 and report.disciplines == 3


def test_fields_that_differ_in_meaning_stay_apart():
    tax, report = merge_drafts(
        [
            draft(
                Sciences={"Physics": ["Optics", "Acoustics"]},
                Social_Sciences={"Economics": ["Microeconomics", "Macroeconomics"]},
                Natural_Sciences={"Biology": ["Genetics", "Ecology"]},
            )
        ]
    )
    assert [f.name for f in tax.fields] == ["Sciences", "Social Sciences", "Natural Sciences"]
    assert report.merged_fields == []


def test_fields_with_mostly_the_same_disciplines_merge_whatever_their_names():
    stem = {"Core": ["Physics", "Chemistry", "Biology", "Geology"]}
    tax, report = merge_drafts([draft(STEM=stem), draft(Natural_World=stem)])
    assert [f.name for f in tax.fields] == ["STEM"]
    assert report.merged_fields == [("STEM", "Natural World")]


@pytest.mark.parametrize(
    "name", ["Broad areas", "Other", "Others", "Miscellaneous", "General", "Main fields", "Misc."]
)
def test_names_that_are_not_fields(name):
    assert is_non_field(name)


@pytest.mark.parametrize(
    "name", ["General Capabilities", "Humanities", "Interdisciplinary Studies", "Agriculture"]
)
def test_names_that_are_fields(name):
    assert not is_non_field(name)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Arts & Humanities", "arts and humanities"),
        ("Civil Engineering.", "civil engineering"),
        ("Literatures", "Literature"),
        ("Gender Studies", "gender study"),
        ("Computer-Science", "Computer Science"),
    ],
)
def test_near_same_names_share_a_key(a, b):
    assert name_key(a) == name_key(b)


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("Science and Technology/Engineering/Chemical Engineering", "academic_applied_science"),
        ("Academic Sciences/Physical Sciences/Organic Chemistry", "academic_natural_science"),
        ("Social Sciences/Economics/Agricultural Economics", "industry_agriculture"),
        ("Arts and Humanities/Arts/Sculpture", "academic_humanities"),
        ("Professions/Trade/Retail Merchandising", "industry_services"),
        ("Industry/Factories/Textile Production", "industry_manufacturing"),
        ("Knowledge/Quantitative/Topology", "academic_formal_science"),
        ("Life/Home/Cooking", "general_capabilities"),
        ("Society/Law/Tort Law", "academic_social_science"),
        ("Data Science/Business Intelligence/Data Science", "academic_applied_science"),
    ],
)
def test_a_discipline_takes_its_group_from_its_names(path, group):
    assert group_for(*path.split("/")) == group


def test_a_discipline_no_keyword_places_takes_its_neighbours_group():
    tax, _ = merge_drafts([draft(Things={"Stuff": ["Optics", "Thermodynamics", "Zyxology"]})])
    assert {d.group for d in tax.disciplines()} == {"academic_natural_science"}


def test_a_discipline_group_overrides_its_fields_and_survives_yaml():
    tax = Taxonomy.model_validate(
        {
            "fields": [
                {
                    "name": "Science and Technology",
                    "group": "academic_natural_science",
                    "subfields": [
                        {
                            "name": "Core",
                            "disciplines": [
                                {"name": "Physics"},
                                {"name": "Civil Engineering", "group": "academic_applied_science"},
                            ],
                        }
                    ],
                }
            ]
        }
    )
    again = Taxonomy.model_validate(yaml.safe_load(tax.to_yaml()))
    assert Counter(d.group for d in again.disciplines()) == {
        "academic_natural_science": 1,
        "academic_applied_science": 1,
    }
