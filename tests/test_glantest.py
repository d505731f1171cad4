"""GLAN-Test: the exam is held out from the run, and two models are graded by a judge in both
orders; checked against the shared fake endpoint with answers and scores known in advance."""

from __future__ import annotations

import hashlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from glan.aio import run as run_async
from glan.api import generate
from glan.cli import app
from glan.errors import UserError
from glan.glantest.build import build_exam
from glan.glantest.discipline import ExamSettings
from glan.glantest.endpoints import parse_endpoint, parse_labelled
from glan.glantest.grade import GradeSettings, check_labels, grade
from glan.glantest.holdout import HoldoutSettings
from glan.glantest.stats import Outcome, summarise
from glan.taxonomy import Taxonomy
from glan.testing.fake_server import FakeServer, default_replier
from glan.testing.runs import config_for, read_jsonl

# Two disciplines in two groups, three questions each: (quality of A's answer, of B's).
QUALITIES = {
    "Sciences/Physics/Optics": ("academic_natural_science", [(7, 3), (5, 5), (6, 5)]),
    "Industry/Services/Retail": ("industry_services", [(4, 8), (3, 4), (8, 6)]),
}
FIRST_BONUS = 2  # the fake judge's position bias: whatever is shown first gets 2 more


def write_exam(test_dir: Path) -> None:
    test_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for path, (group, pairs) in QUALITIES.items():
        field, subfield, discipline = path.split("/")
        for i, (qa, qb) in enumerate(pairs):
            meta = {
                "field": field,
                "subfield": subfield,
                "discipline": discipline,
                "group": group,
                "subject": "S",
                "level": "introductory",
                "sessions": ["s"],
                "concepts": ["c"],
                "strategy": "single",
                "question_model": "q",
            }
            question = f"Question {discipline} {i}: quality A={qa} B={qb}?"
            lines.append(
                orjson.dumps({"id": f"{discipline}-{i}", "question": question, "meta": meta})
            )
    (test_dir / "exam.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _quality(answer: str) -> int:
    found = re.search(r"quality (\d+)", answer)
    return int(found.group(1)) if found else 1  # "(no answer)"


def replier(body: dict[str, Any]) -> Any:
    """model-a and model-b answer with their quality for the question; the judge scores each
    answer its quality, plus FIRST_BONUS for the one shown first."""
    last = body["messages"][0]["content"]  # the question or the judge's prompt (not a re-ask)
    if body["model"] in ("model-a", "model-b"):
        which = body["model"][-1].upper()
        quality = re.search(rf"{which}=(\d+)", last).group(1)
        return f"An answer of quality {quality}."
    first = _between(last, "[The start of Assistant 1's answer]", "[The end of Assistant 1's")
    second = _between(last, "[The start of Assistant 2's answer]", "[The end of Assistant 2's")
    s1, s2 = _quality(first) + FIRST_BONUS, _quality(second)
    return {"explanation": "known scores", "score_1": s1, "score_2": s2}


def endpoints(server: FakeServer) -> tuple[dict[str, Any], Any]:
    models = parse_labelled(
        [f"A=openai:model-a@{server.base_url}", f"B=openai:model-b@{server.base_url}"]
    )
    return models, parse_endpoint(f"openai:judge@{server.base_url}")


@pytest.fixture
def exam(tmp_path: Path) -> Path:
    write_exam(tmp_path / "exam")
    return tmp_path / "exam"


async def test_the_table_and_the_flip_rate_follow_from_the_judges_known_scores(exam, tmp_path):
    with FakeServer(replier=replier) as server:
        models, judge = endpoints(server)
        report = await grade(exam, models, judge, tmp_path / "out")
        # Two answers and two orders per item; one request less where both answers are the
        # same text (5 and 5): its two orders are one request, asked once.
        assert server.requests == 6 * 2 + 6 * 2 - 1
    # Each model's item score is its quality + 1 (the bonus, halved over both orders); the
    # verdict flips with the order exactly when the qualities differ by at most the bonus.
    science, services = (
        report["groups"]["academic_natural_science"],
        report["groups"]["industry_services"],
    )
    assert science["mean"] == {"A": 7.0, "B": round(16 / 3, 4)}
    assert science["wins"] == {"A": 2, "tie": 1, "B": 0}
    assert science["flips"] == 2
    assert services["mean"] == {"A": 6.0, "B": 7.0}
    assert services["wins"] == {"A": 1, "tie": 0, "B": 2}
    assert services["flips"] == 2
    assert report["disciplines"]["Sciences/Physics/Optics"]["mean"] == science["mean"]
    assert report["position_bias"]["verdict_flips"] == 4
    assert report["position_bias"]["flip_rate"] == round(4 / 6, 4)
    # First shown higher in 9 of 12 judgments; second in 2 (7-3 and 4-8 shown the other way
    # round); one tie (8-6 with 6 shown first: 8 against 6 + 2).
    assert report["position_bias"]["first_shown_scored_higher"] == 9
    assert report["position_bias"]["second_shown_scored_higher"] == 2
    for row in (science, services, report["overall"]):  # 3, 3 and 6 items: no intervals
        assert row["ci95"] is None and row["difference"]["ci95"] is None
        assert row["no_interval"] == "n<10"
    assert report["unscored"] == []
    out = tmp_path / "out"
    assert (
        "| academic_natural_science | 3 | 7.00 (n<10) | 5.33 (n<10) |"
        in (out / "report.md").read_text()
    )
    page = (out / "report.html").read_text()
    assert "Position bias" in page and page.count('class="card"') == 4
    assert "<script src=" not in page  # plotly inline: the page works offline


def test_intervals_are_paired_bootstraps_over_items_fixed_by_the_seed():
    scores = {"A": [9, 3, 7, 5, 8, 9, 3, 7, 5, 8], "B": [2, 4, 7, 1, 6, 2, 4, 7, 1, 6]}
    outcomes = [Outcome(a, b, "tie", False) for a, b in zip(*scores.values(), strict=True)]
    first = summarise(outcomes, ("A", "B"), "row", 1000, seed=0)
    assert summarise(outcomes, ("A", "B"), "row", 1000, seed=0) == first
    other = summarise(outcomes, ("A", "B"), "row", 1000, seed=1)
    assert other["mean"] == first["mean"] == {"A": 6.4, "B": 4.0}
    assert other["ci95"] != first["ci95"]
    for label in ("A", "B"):
        lo, hi = first["ci95"][label]
        assert min(scores[label]) <= lo < first["mean"][label] < hi <= max(scores[label])


def _cached_replies(test_dir: Path) -> int:
    with sqlite3.connect(test_dir / "glan.sqlite") as conn:
        return conn.execute("SELECT count(*) FROM responses").fetchone()[0]


def _grading_command(exam: Path, server: FakeServer, out: Path) -> list[str]:
    url = server.base_url
    return [
        sys.executable, "-m", "glan", "test", "run", str(exam),
        "--model", f"A=openai:model-a@{url}", "--model", f"B=openai:model-b@{url}",
        "--judge", f"openai:judge@{url}", "--out", str(out), "--concurrency", "2", "-q",
    ]  # fmt: skip


def _without_run_details(report: dict[str, Any]) -> dict[str, Any]:
    """A report less what says where and at what cost this run was made."""
    return {k: v for k, v in report.items() if k not in ("exam", "usage", "cost_usd")}


@pytest.mark.slow
def test_a_killed_grading_run_resumes_without_asking_anything_it_had_finished(exam, tmp_path):
    """`glan test run` killed with SIGKILL while the judge is half-way through the exam; the
    same command again asks only what the killed run had not finished, and writes what an
    uninterrupted run writes."""
    judged = 0

    def counting(body: dict[str, Any]) -> Any:
        nonlocal judged
        judged += body["model"] == "judge"
        return replier(body)

    write_exam(tmp_path / "untouched")
    with FakeServer(replier=counting, latency_s=0.05) as server:
        models, judge = endpoints(server)
        clean = grade(
            tmp_path / "untouched", models, judge, tmp_path / "clean", GradeSettings(concurrency=2)
        )
        run_async(clean)
        assert server.requests == 23
        judged = 0
        command = _grading_command(exam, server, tmp_path / "out")
        killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while judged < 5 and killed.poll() is None:  # 11 judge requests in all
            assert time.monotonic() < deadline, "the judge was never reached"
            time.sleep(0.005)  # polling for the condition, not waiting on luck
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL  # it was still grading: no report written
        assert not (tmp_path / "out" / "report.json").exists()
        server.wait_idle()  # what the dead run had sent is answered into the void
        finished = _cached_replies(exam)
        assert 0 < finished < 23
        before = server.requests
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        # Only what had not finished is asked again: one request for each missing reply.
        assert server.requests - before == 23 - finished
    assert _cached_replies(exam) == 23
    judgments = (tmp_path / d / "judgments.jsonl" for d in ("out", "clean"))
    assert next(judgments).read_bytes() == next(judgments).read_bytes()
    report, reference = (
        orjson.loads((tmp_path / d / "report.json").read_bytes()) for d in ("out", "clean")
    )
    assert report["scored"] == 6
    assert _without_run_details(report) == _without_run_details(reference)


async def test_a_judge_reply_that_never_parses_is_reported_and_never_scored(exam, tmp_path):
    def garbled_for_one_item(body: dict[str, Any]) -> Any:
        first = body["messages"][0]["content"]
        if body["model"] == "judge" and "Optics 1:" in first:
            return "I would give the first one a seven, probably."
        return replier(body)

    with FakeServer(replier=garbled_for_one_item) as server:
        models, judge = endpoints(server)
        report = await grade(exam, models, judge, tmp_path / "out")
    assert report["scored"] == 5
    [unscored] = report["unscored"]
    assert unscored["id"] == "Optics-1"
    assert "judge reply not usable" in unscored["why"] and "no parseable JSON" in unscored["why"]
    assert report["groups"]["academic_natural_science"]["items"] == 2
    records = [
        orjson.loads(x) for x in (tmp_path / "out" / "judgments.jsonl").read_bytes().splitlines()
    ]
    optics_1 = next(r for r in records if r["id"] == "Optics-1")
    assert all(j["scores"] is None and j["error"] for j in optics_1["judgments"])


# ---- building the exam ------------------------------------------------------------------------
SHARED = "Shared Course"  # every listing offers it: the run uses it, the exam must not
WORDS = [
    "light",
    "wave",
    "lens",
    "prism",
    "focus",
    "angle",
    "energy",
    "sound",
    "pitch",
    "echo",
    "pressure",
    "medium",
    "speed",
    "image",
]
# The fake server's subject names are one template ("subjects 0 name <hex>"): their embeddings
# are all alike, so these tests hold out by the lexical checks (the embedding ones are proved
# on real names in test_glantest_holdout.py).
LEXICAL = HoldoutSettings(semantic=False)


def realistic(body: dict[str, Any]) -> Any:
    """The default fake replies, except that every listing offers SHARED first and questions
    are sentences of twenty words from a small vocabulary (near-duplicates mean something, and
    a chance one between two unrelated questions is rare: their shared template is a third of
    their word trigrams, far under the 0.7 Jaccard threshold)."""
    reply = default_replier(body)
    name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
    digest = int(
        hashlib.sha256(orjson.dumps(body["messages"]) + str(body["seed"]).encode()).hexdigest(), 16
    )
    if name == "subjects":
        reply["subjects"][0]["name"] = SHARED
    elif name == "question":
        picked = [WORDS[(digest >> (4 * i)) % len(WORDS)] for i in range(12)]
        reply = {
            "question": f"How does the {' '.join(picked)} idea explain what a student sees, and why?"
        }
    return reply


def grouped_taxonomy() -> Taxonomy:
    return Taxonomy.model_validate(
        {
            "fields": [
                {
                    "name": "Sciences",
                    "group": "academic_natural_science",
                    "subfields": [{"name": "Physics", "disciplines": [{"name": "Optics"}]}],
                },
                {
                    "name": "Industry",
                    "group": "industry_services",
                    "subfields": [{"name": "Services", "disciplines": [{"name": "Retail"}]}],
                },
            ]
        }
    )


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gtest") / "run"
    with FakeServer(replier=realistic) as server:
        generate(run, 20, config_for(server), grouped_taxonomy())
    return run


def test_the_exam_uses_only_subjects_the_run_did_not_and_carries_the_groups(made_run, tmp_path):
    with FakeServer(replier=realistic) as server:
        exam = build_exam(
            config_for(server),
            grouped_taxonomy(),
            tmp_path / "exam",
            ExamSettings(per_discipline=6, per_subject=3),
            run_dir=made_run,
            holdout=LEXICAL,
        )
        manifest = run_async(exam)
        items = read_jsonl(tmp_path / "exam" / "exam.jsonl")
        asked = server.requests
        again = run_async(
            build_exam(
                config_for(server),
                grouped_taxonomy(),
                tmp_path / "exam",
                ExamSettings(per_discipline=6, per_subject=3),
                run_dir=made_run,
                holdout=LEXICAL,
            )
        )
        assert server.requests == asked  # a re-run is answered from the cache alone
        assert read_jsonl(tmp_path / "exam" / "exam.jsonl") == items
        assert again["disciplines"] == manifest["disciplines"]
    run_subjects = {r["meta"]["subject"] for r in read_jsonl(made_run / "instructions.jsonl")}
    assert SHARED in run_subjects
    assert len(items) == 12
    assert not {i["meta"]["subject"] for i in items} & run_subjects
    assert manifest["held_out"]["listed_subjects_skipped_as_run_subjects"] >= 2
    assert manifest["groups"] == {"academic_natural_science": 6, "industry_services": 6}
    assert manifest["overlap"]["with_training_after_filtering"] == 0


def test_training_questions_planted_in_the_exam_are_caught_dropped_and_replaced(made_run, tmp_path):
    training = read_jsonl(made_run / "instructions.jsonl")
    copied, edited = (training[i]["messages"][0]["content"] for i in (0, 1))
    plants = [copied, edited.replace("and why?", "and why exactly?")]  # a copy, a near copy

    def planting(body: dict[str, Any]) -> Any:
        reply = realistic(body)
        if "question" in reply and plants:
            return {"question": plants.pop(0)}
        return reply

    with FakeServer(replier=planting) as server:
        manifest = run_async(
            build_exam(
                config_for(server),
                grouped_taxonomy(),
                tmp_path / "exam",
                ExamSettings(per_discipline=6, per_subject=3),
                run_dir=made_run,
                holdout=LEXICAL,
            )
        )
    overlap = manifest["overlap"]
    assert {(d["of"], d["kind"], d["source"]) for d in overlap["dropped"]} == {
        (training[0]["id"], "exact", "training"),
        (training[1]["id"], "near", "training"),
    }
    assert overlap["found_with_training"] == 2
    assert overlap["with_training_after_filtering"] == 0
    questions = [i["question"] for i in read_jsonl(tmp_path / "exam" / "exam.jsonl")]
    assert len(questions) == 12  # both replaced from the same disciplines
    assert copied not in questions and not any("why exactly" in q for q in questions)


# ---- the command line -------------------------------------------------------------------------
def test_endpoint_specs_name_a_kind_a_model_an_address_and_settings():
    local = parse_endpoint("local:smollm2")
    assert (local.backend, local.model_name, local.tiny) == ("local", "smollm2", True)
    remote = parse_endpoint("openai:llama-3@http://localhost:8000/v1,api_key_env=MY_KEY")
    assert remote.identity() == ("openai", "http://localhost:8000/v1", "llama-3")
    assert remote.api_key_env == "MY_KEY"
    for bad, says in (
        ("gpt:4o", "unknown kind 'gpt'"),
        ("local:x@http://h/v1", "base_url does not apply to the local backend"),
        ("openai:m,timeout", "expected FIELD=VALUE"),
    ):
        with pytest.raises(UserError, match=re.escape(says)):
            parse_endpoint(bad)
    with pytest.raises(UserError, match="given twice"):
        parse_labelled(["A=local", "A=openai:m"])
    for labels, says in (
        (["tie=local", "b=local"], "is a verdict"),
        (["../x=local", "b=local"], "use letters"),
    ):
        with pytest.raises(UserError, match=says):
            check_labels(parse_labelled(labels))


def test_the_exam_inherits_the_runs_config_but_not_sizes_made_for_another_model(tmp_path):
    from glan.cli.glantest import exam_config
    from glan.config import GenerateConfig

    run = tmp_path / "run"
    run.mkdir()
    made = GenerateConfig.model_validate({"seed": 7}).adapted()  # the embedded model's sizes
    (run / "manifest.json").write_bytes(orjson.dumps({"config": made.model_dump(mode="json")}))
    same = exam_config(run, None, {}, {})
    assert (same.seed, same.syllabus.max_sessions, same.plan.subjects_per_call) == (7, 5, 4)
    assert same.concurrency == GenerateConfig().concurrency  # a throughput knob, not inherited
    switched = exam_config(run, None, {"llm.backend": "openai", "llm.model": "gpt-4o"}, {})
    assert (switched.seed, switched.llm.model_name) == (7, "gpt-4o")
    assert switched.syllabus.max_sessions == 30 and switched.plan.subjects_per_call == 15


def test_build_dry_run_prices_the_stages_of_the_exam_without_a_run(tmp_path):
    (tmp_path / "tax.yaml").write_text(grouped_taxonomy().to_yaml())
    result = CliRunner().invoke(
        app,
        [
            "test",
            "build",
            "--taxonomy",
            str(tmp_path / "tax.yaml"),
            "--out",
            str(tmp_path / "x"),
            "--per-discipline",
            "10",
            "--backend",
            "openai",
            "--model",
            "m",
            "--dry-run",
            "--set",
            "prices.m.input=1",
            "--set",
            "prices.m.output=1",
        ],
    )
    assert result.exit_code == 0, result.output
    # 2 disciplines x (1 listing, 10 / 5 = 2 syllabi, 10 questions); no answers stage
    for stage, calls in (("subjects", 2), ("syllabus", 4), ("questions", 20)):
        assert re.search(rf"{stage}\s+│\s+m\s+│\s+{calls}\s", result.output), stage
    assert "answers" not in result.output and "$" in result.output
    assert not (tmp_path / "x").exists()


def test_glan_test_build_then_run_from_the_command_line(made_run, tmp_path):
    runner = CliRunner()
    exam = tmp_path / "exam"
    with FakeServer(replier=realistic) as server:
        result = runner.invoke(
            app,
            [
                "test",
                "build",
                str(made_run),
                "--out",
                str(exam),
                "--per-discipline",
                "2",
                "--base-url",
                server.base_url,
                "--model",
                "fake-model",
                "--reference-model",
                f"openai:fake-model@{server.base_url}",
                "--no-semantic",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "4 questions over 2 disciplines" in result.output
        assert "overlap after filtering 0" in result.output
        assert "question checks: exact + MinHash only" in result.output  # --no-semantic
        assert "reference answers: 4 answered, 0 failed, 0 cut at the token limit" in (
            result.output
        )
        assert len(read_jsonl(exam / "references.jsonl")) == 4
        manifest = orjson.loads((exam / "manifest.json").read_bytes())
        assert manifest["config"]["seed"] == 0 and manifest["source"]["run_dir"] == str(made_run)

    def judged(body: dict[str, Any]) -> Any:
        if body["model"] == "judge":
            return {"explanation": "fine", "score_1": 6, "score_2": 4}
        return f"An answer from {body['model']}."

    with FakeServer(replier=judged) as server:
        url = server.base_url
        specs = [
            "--model",
            f"base=openai:m1@{url}",
            "--model",
            f"tuned=openai:m2@{url}",
            "--judge",
            f"openai:judge@{url}",
        ]
        dry = runner.invoke(app, ["test", "run", str(exam), *specs, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert re.search(r"judge\s+│\s+judge\s+│\s+8\s", dry.output)  # 4 questions, 2 orders
        assert server.requests == 0
        result = runner.invoke(app, ["test", "run", str(exam), *specs, "-q"])
        assert result.exit_code == 0, result.output
    out = exam / "results" / "base-vs-tuned"
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["overall"]["mean"] == {"base": 5.0, "tuned": 5.0}  # 6 first, 4 second
    assert report["overall"]["flip_rate"] == 1.0  # a judge that always prefers the first
    assert report["references"] is True
    assert "| academic_natural_science | 2 |" in result.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


async def test_an_answer_lost_to_a_failing_endpoint_is_not_judged_and_a_rerun_fills_it(
    exam, tmp_path
):
    with FakeServer(replier=replier) as server:
        models, judge = endpoints(server)
        server.enqueue("503")  # the first answer's only attempt fails
        report = await grade(exam, models, judge, tmp_path / "out", GradeSettings(max_retries=0))
        [lost] = report["unscored"]
        assert "did not answer" in lost["why"] and "re-run to resume" in lost["why"]
        assert report["scored"] == 5
        records = read_jsonl(tmp_path / "out" / "judgments.jsonl")
        assert next(r for r in records if r["id"] == lost["id"])["judgments"] == []
        report = await grade(exam, models, judge, tmp_path / "out")
    assert report["scored"] == 6 and report["unscored"] == []


# Last in the module: sync Playwright keeps an event loop running in this thread until the
# module-scoped browser closes, and async tests after it could not run.
@pytest.mark.slow
def test_the_report_page_draws_its_plots_offline_in_headless_chromium(
    exam, tmp_path, offline_page, artifacts
):
    with FakeServer(replier=replier) as server:
        models, judge = endpoints(server)
        with ThreadPoolExecutor(1) as pool:  # sync Playwright holds this thread's event loop
            pool.submit(run_async, grade(exam, models, judge, tmp_path / "out")).result()
    page, outside, errors = offline_page.page, offline_page.outside, offline_page.errors
    page.goto((tmp_path / "out" / "report.html").as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    bars = page.eval_on_selector_all(".bars path", "els => els.length")
    error_bars = page.eval_on_selector_all(".errorbar", "els => els.length")
    page.screenshot(path=str(artifacts / "glan-test-report.png"), full_page=True)
    page.close()
    assert bars >= 10 and error_bars >= 6  # means per group and discipline, with intervals
    assert not errors, errors
    assert not outside, outside
