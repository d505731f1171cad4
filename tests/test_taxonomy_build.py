"""`glan taxonomy build` against the fake server: overlapping drafts from the three prompt
wordings become one taxonomy with each discipline once, same-meaning fields merged, non-fields
dropped, every discipline in a GLAN-Test group, and a report of what was merged."""

from __future__ import annotations

from typer.testing import CliRunner

from glan.cli import app
from glan.stages.taxonomy_build import PROMPTS
from glan.taxonomy import load_taxonomy
from glan.testing.fake_server import default_replier

# What a small model gives for the three prompt wordings: the same disciplines under fields
# worded differently, a field named after the prompt's own words, spellings that differ.
DRAFTS = [
    {
        "fields": [
            {
                "name": "Academic Sciences",
                "subfields": [
                    {"name": "Physical Sciences", "disciplines": ["Physics", "Chemistry"]},
                    {"name": "Life Sciences", "disciplines": ["Biology"]},
                    {"name": "Mathematics", "disciplines": ["Mathematics"]},
                    {"name": "Engineering", "disciplines": ["Civil Engineering"]},
                ],
            },
            {
                "name": "Humanities",
                "subfields": [
                    {"name": "Philosophy", "disciplines": ["Philosophy", "Ethics"]},
                    {"name": "History", "disciplines": ["History"]},
                    {"name": "Literature", "disciplines": ["Literature"]},
                ],
            },
            {
                "name": "Social Sciences",
                "subfields": [
                    {"name": "Economics", "disciplines": ["Economics"]},
                    {"name": "Behaviour", "disciplines": ["Psychology", "Sociology"]},
                ],
            },
            {
                "name": "Industry",
                "subfields": [
                    {"name": "Manufacturing", "disciplines": ["Automotive Manufacturing"]},
                    {"name": "Finance", "disciplines": ["Banking"]},
                    {"name": "Farming", "disciplines": ["Agronomy"]},
                ],
            },
        ]
    },
    {
        "fields": [
            {
                "name": "Science and Technology",
                "subfields": [
                    {"name": "Physics", "disciplines": ["physics", "Chemistry."]},
                    {"name": "Maths", "disciplines": ["Mathematics"]},
                    {
                        "name": "Engineering",
                        "disciplines": ["Civil engineering", "Computer Science"],
                    },
                ],
            },
            {
                "name": "Arts & Humanities",
                "subfields": [
                    {"name": "Thought", "disciplines": ["Philosophy", "ethics"]},
                    {"name": "Past", "disciplines": ["History", "Literatures"]},
                    {"name": "Arts", "disciplines": ["Music"]},
                ],
            },
            {
                "name": "social sciences",
                "subfields": [
                    {"name": "Economics", "disciplines": ["Economics"]},
                    {"name": "Politics", "disciplines": ["Political Science"]},
                ],
            },
        ]
    },
    {
        "fields": [
            {
                "name": "Broad areas",
                "subfields": [
                    {"name": "Everything", "disciplines": ["Physics", "Cookery Basics"]},
                ],
            },
            {
                "name": "Sciences",
                "subfields": [
                    {"name": "Physics", "disciplines": ["PHYSICS", "Astronomy"]},
                    {"name": "Life Sciences", "disciplines": ["Biology"]},
                ],
            },
            {
                "name": "Business and Services",
                "subfields": [
                    {"name": "Finance", "disciplines": ["Banking", "Marketing"]},
                ],
            },
        ]
    },
]
DISTINCT = {
    "Physics", "Chemistry", "Biology", "Mathematics", "Civil Engineering", "Computer Science",
    "Astronomy", "Philosophy", "Ethics", "History", "Literature", "Music", "Economics",
    "Psychology", "Sociology", "Political Science", "Automotive Manufacturing", "Banking",
    "Agronomy", "Marketing",
}  # fmt: skip
LISTED = sum(len(s["disciplines"]) for d in DRAFTS for f in d["fields"] for s in f["subfields"])


def overlapping_drafts(body: dict):
    """The draft for the request's prompt wording; any other request gets the default reply."""
    text = body["messages"][-1]["content"]
    for wording, reply in zip(PROMPTS, DRAFTS, strict=True):
        if text.startswith(wording):
            return reply
    return default_replier(body)


def test_build_merges_overlapping_drafts_and_groups_every_discipline(fake_server, tmp_path):
    fake_server.replier = overlapping_drafts
    out = tmp_path / "draft.yaml"
    runner = CliRunner()
    endpoint = ["--backend", "openai", "--base-url", fake_server.base_url, "--model", "small"]
    built = runner.invoke(app, ["taxonomy", "build", "--out", str(out), *endpoint])
    assert built.exit_code == 0, built.output
    assert fake_server.requests == 3
    assert (
        f"3 drafts listed {LISTED} disciplines: merged 3 fields, "
        f"{LISTED - 2 - len(DISTINCT)} duplicate disciplines, dropped 1 non-field "
        "(and 1 discipline listed only there)"
    ) in built.output
    assert "'Broad areas': not a field" in built.output

    tax = load_taxonomy(out)
    kept = tax.disciplines()
    assert {d.name for d in kept} == DISTINCT and len(kept) == len(DISTINCT)
    assert [f.name for f in tax.fields] == [
        "Academic Sciences",
        "Humanities",
        "Social Sciences",
        "Industry",
        "Business and Services",
    ]
    assert not tax.problems()
    curated_groups = {d.group for d in load_taxonomy().disciplines()}  # spelled as shipped
    assert all(d.group in curated_groups for d in kept)
    groups = {d.name: d.group for d in kept}
    assert groups["Civil Engineering"] == groups["Computer Science"] == "academic_applied_science"
    assert groups["Physics"] == groups["Astronomy"] == "academic_natural_science"
    assert groups["Mathematics"] == "academic_formal_science"
    assert groups["Banking"] == groups["Marketing"] == "industry_services"
    assert groups["Automotive Manufacturing"] == "industry_manufacturing"
    assert groups["Agronomy"] == "industry_agriculture"
    assert groups["Music"] == groups["Ethics"] == "academic_humanities"

    stats = runner.invoke(app, ["taxonomy", "stats", str(out)])
    assert stats.exit_code == 0 and "(none)" not in stats.output
    assert f"kept disciplines: {len(DISTINCT)}" in stats.output
