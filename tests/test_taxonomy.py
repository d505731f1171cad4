"""The taxonomy: the curated default, review votes, and the taxonomy commands."""

from __future__ import annotations

from collections import Counter

import pytest
from typer.testing import CliRunner

from glan.cli import app
from glan.errors import UserError
from glan.taxonomy import GLAN_TEST_GROUPS, Taxonomy, load_taxonomy


def test_default_taxonomy_covers_the_glan_test_groups_and_general_capabilities():
    tax = load_taxonomy()
    kept = tax.disciplines()
    assert len(kept) >= 126 and not tax.problems()
    assert {d.group for d in kept} == set(GLAN_TEST_GROUPS)
    capabilities = {d.subfield for d in kept if d.group == "general_capabilities"}
    assert {"Writing", "Coding", "Reasoning", "Everyday Skills"} <= capabilities
    assert min(Counter(d.group for d in kept).values()) >= 8


def test_votes_decide_and_removal_takes_the_subtree():
    tax = Taxonomy.model_validate(
        {
            "fields": [
                {
                    "name": "F",
                    "subfields": [
                        {
                            "name": "S",
                            "disciplines": [
                                {
                                    "name": "kept by majority",
                                    "votes": {"a": "keep", "b": "keep", "c": "remove"},
                                },
                                {
                                    "name": "removed by majority",
                                    "votes": {"a": "remove", "b": "remove", "c": "keep"},
                                },
                                {"name": "tie keeps", "votes": {"a": "keep", "b": "remove"}},
                                {
                                    "name": "status overrides votes",
                                    "status": "remove",
                                    "votes": {"a": "keep"},
                                },
                            ],
                        },
                        {
                            "name": "gone",
                            "votes": {"a": "remove"},
                            "disciplines": [{"name": "inside"}],
                        },
                    ],
                },
            ]
        }
    )
    assert [d.name for d in tax.disciplines()] == ["kept by majority", "tie keeps"]


def test_add_creates_missing_parents_and_refuses_duplicates():
    tax = Taxonomy()
    assert tax.add("New Field / New Sub / New Discipline") == "New Field/New Sub/New Discipline"
    with pytest.raises(UserError, match="already"):
        tax.add("New Field/New Sub/New Discipline")
    with pytest.raises(UserError, match="FIELD/SUBFIELD/DISCIPLINE"):
        tax.add("only/two")


def test_taxonomy_commands(tmp_path):
    runner = CliRunner()
    shown = runner.invoke(app, ["taxonomy", "show"])
    assert shown.exit_code == 0 and "Organic Chemistry" in shown.output
    stats = runner.invoke(app, ["taxonomy", "stats"])
    assert stats.exit_code == 0 and "kept disciplines: 153" in stats.output
    assert "general_capabilities: 20" in stats.output
    mine = tmp_path / "mine.yaml"
    added = runner.invoke(
        app,
        [
            "taxonomy",
            "add",
            "Applied Sciences/Engineering/Robotics",
            "--file",
            str(mine),
            "--description",
            "robots",
            "--from-default",
        ],
    )
    assert added.exit_code == 0, added.output
    reloaded = load_taxonomy(mine)
    assert len(reloaded.disciplines()) == 154
    robotics = next(d for d in reloaded.disciplines() if d.name == "Robotics")
    assert robotics.description == "robots" and robotics.group == "academic_applied_science"
    assert runner.invoke(app, ["taxonomy", "validate", str(mine)]).exit_code == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("fields:\n- name: F\n  subfields: []\n- name: F\n  subfields: []\n")
    result = runner.invoke(app, ["taxonomy", "validate", str(broken)])
    assert result.exit_code == 2 and "appears twice" in result.output


def test_taxonomy_add_on_a_new_file_writes_only_that_node(tmp_path):
    import subprocess
    import sys

    from glan.taxonomy import load_taxonomy

    file = tmp_path / "mine.yaml"
    for node in ("Sciences/Physics/Optics", "Sciences/Physics/Acoustics"):
        proc = subprocess.run(
            [sys.executable, "-m", "glan", "taxonomy", "add", node, "--file", str(file)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
    assert [d.name for d in load_taxonomy(file).disciplines()] == ["Optics", "Acoustics"]


def test_the_groups_glan_knows_are_glan_test_s_and_the_drafting_table_s():
    from glan.stages.taxonomy_groups import KEYWORDS

    assert len(GLAN_TEST_GROUPS) == 9 and "general_capabilities" in GLAN_TEST_GROUPS
    assert set(GLAN_TEST_GROUPS) == {group for group, _ in KEYWORDS}


def one_field(group: str) -> str:
    return (
        f"fields:\n- name: Sciences\n  group: {group}\n  subfields:\n  - name: Physics\n"
        "    disciplines:\n    - name: Optics\n"
    )


@pytest.mark.parametrize(
    ("group", "needle"),
    [
        ("academic_natural_sciense", "did you mean academic_natural_science?"),
        ("academic_natural_sciences", "did you mean academic_natural_science?"),
        ("Natural Sciences", "is not a label"),
    ],
    ids=["misspelt", "plural", "not a label"],
)
def test_validate_refuses_a_misspelt_group(tmp_path, group, needle):
    path = tmp_path / "tax.yaml"
    path.write_text(one_field(f"'{group}'"))
    result = CliRunner().invoke(app, ["taxonomy", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"field 'Sciences': group '{group}'" in result.output and needle in result.output


def test_validate_accepts_a_group_of_the_reviewers_own_and_says_so(tmp_path):
    path = tmp_path / "tax.yaml"
    path.write_text(one_field("space_law"))
    result = CliRunner().invoke(app, ["taxonomy", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "groups of its own, reported apart from GLAN-Test's: space_law" in result.output


def test_a_wrong_value_in_a_taxonomy_file_names_its_line(tmp_path):
    path = tmp_path / "tax.yaml"
    path.write_text(one_field("general_capabilities") + "      weight: heavy\n")
    with pytest.raises(
        UserError, match=r"tax\.yaml:8: fields\.0\.subfields\.0\.disciplines\.0\.weight"
    ):
        load_taxonomy(path)
