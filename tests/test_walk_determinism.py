"""The walk's records depend on the replies alone: a unit deferred (the endpoint's failure) and
asked again by a later invocation leaves the records of an uninterrupted walk, whatever it
interrupted: extra listings, the hand-out of spare subjects, rebalancing, exhaustion."""

from __future__ import annotations

import pytest

from glan.testing.scripted_ask import (
    ScriptedAsk,
    one_discipline_plan,
    walk_once,
    walk_until_settled,
)


def assert_resume_gives_the_uninterrupted_records(tmp_path, plan, listings, fails, defer, **kw):
    clean = walk_until_settled(tmp_path / "clean", plan, ScriptedAsk(listings, dict(fails), **kw))
    interrupted = ScriptedAsk(listings, {**fails, **defer}, **kw)
    assert walk_once(tmp_path / "resumed", plan, interrupted) > 0  # it did defer
    assert walk_until_settled(tmp_path / "resumed", plan, interrupted) == clean


def test_a_resumed_run_plans_no_more_slots_than_its_planned_listings_give(tmp_path):
    """Planned listings give fewer subjects than planned slots; a failed syllabus makes the
    walk ask an extra listing for a spare. The resumed run must not plan slots from it."""
    assert_resume_gives_the_uninterrupted_records(
        tmp_path,
        one_discipline_plan(quota=12, subjects=3, samples=1),
        {0: ["SubjA", "SubjB"], 1: ["SubjC", "SubjD", "SubjE"]},
        {("syllabus", "SubjA"): ["perm"]},
        {("questions", "SubjB", 0): ["trans"]},
    )


def test_a_deferred_extra_listing_never_reorders_the_spares_handed_out(tmp_path):
    """Slots 0 and 2 fail; there is one spare for two, so an extra listing is asked, and it is
    deferred: nothing of the round is handed out, and the next run hands it out whole."""
    assert_resume_gives_the_uninterrupted_records(
        tmp_path,
        one_discipline_plan(quota=7, subjects=3, samples=1),
        {0: ["SubjA", "SubjB", "SubjC", "SubjD"], 1: ["SubjE", "SubjF"]},
        {
            ("syllabus", "SubjA"): ["perm"],
            ("syllabus", "SubjC"): ["perm"],
            ("syllabus", "SubjD"): ["perm"],
        },
        {("subjects", 1): ["trans"]},
    )


@pytest.mark.parametrize(
    "deferred",
    [
        ("questions", "SubjB", 0),
        ("answers", "Q SubjC #2"),
        ("questions", "SubjA", 1),
        ("syllabus", "SubjC"),
    ],
    ids=["question", "answer", "question of the subject that runs out", "syllabus"],
)
def test_exhaustion_and_rebalancing_survive_a_deferral(tmp_path, deferred):
    """SubjA has one session (few combinations) and runs out; SubjD's syllabus fails for
    good; its pairs and SubjA's go to the live subjects; a unit is deferred twice on the way."""
    assert_resume_gives_the_uninterrupted_records(
        tmp_path,
        one_discipline_plan(quota=40, subjects=3, samples=1),
        {0: ["SubjA", "SubjB", "SubjC", "SubjD"]},
        {
            ("syllabus", "SubjD"): ["perm"],
            ("questions", "SubjA", 0): ["perm"],
            ("questions", "SubjB", 3): ["perm"],
        },
        {deferred: ["trans", "trans"]},
        sessions={"SubjA": 1},
    )


def test_a_subject_whose_questions_always_fail_runs_out_after_its_failure_budget(tmp_path):
    """A model that never writes a usable question for SubjA: without a bound the walk would
    try every combination of its syllabus (thousands at the paper's sizes). It stops SubjA
    after its failure budget, counted, and SubjB takes over its pairs; an interrupted run ends
    the same way."""
    from glan.tree.pairs import FAILURES_PER_TARGET, MIN_FAILURE_BUDGET

    plan = one_discipline_plan(quota=10, subjects=2, samples=1)
    always = {("questions", "SubjA", i): ["perm"] for i in range(10_000)}
    ask = ScriptedAsk({0: ["SubjA", "SubjB"]}, always, sessions=30)
    records = walk_until_settled(tmp_path / "clean", plan, ask)
    asked = sum(n for key, n in ask.calls.items() if key[:2] == ("questions", "SubjA"))
    assert asked == max(MIN_FAILURE_BUDGET, FAILURES_PER_TARGET * 5)
    assert [subject for subject, _ in records] == ["SubjB"] * 10
    assert_resume_gives_the_uninterrupted_records(
        tmp_path / "again",
        plan,
        {0: ["SubjA", "SubjB"]},
        always,
        {("questions", "SubjB", 1): ["trans"]},
        sessions=30,
    )
