"""GLAN-Test's evidence: the paired difference between models with its interval and p-value,
the win rate, and absolute (single-answer) grading of any number of models; checked against
the shared fake endpoint with differences planted in the answers, and on synthetic scores."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from glan.cli import app
from glan.errors import UserError
from glan.glantest.endpoints import parse_endpoint, parse_labelled
from glan.glantest.grade import GradeSettings, grade, results_name
from glan.glantest.report import build_report
from glan.glantest.report_absolute import build_absolute_report, write_absolute_report
from glan.glantest.stats import score_rows, sign_flip_p
from glan.testing.fake_judge import judge_reply
from glan.testing.fake_server import FakeServer

DISCIPLINES = [
    ("Sciences", "Physics", "Optics", "academic_natural_science"),
    ("Industry", "Services", "Retail", "industry_services"),
]
NOISE = (-1, 0, 1)  # added in turn to a planted offset: it sums to 0 over every 3 items


def write_planted_exam(test_dir: Path, n: int, offsets: dict[str, int]) -> None:
    """`n` questions alternating between two disciplines; each names the quality of every
    model's answer: the item's base quality, plus the model's planted offset, plus NOISE in
    turn for every model but the first (so each difference from it averages its offset)."""
    test_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        field, subfield, discipline, group = DISCIPLINES[i % 2]
        base = 3 + (i * 7) % 4  # 3..6
        qualities = {
            label: base + offset + (NOISE[(i // 2) % 3] if k else 0)
            for k, (label, offset) in enumerate(offsets.items())
        }
        named = " ".join(f"{label}={q}" for label, q in qualities.items())
        meta = {"field": field, "subfield": subfield, "discipline": discipline, "group": group}
        item = {"id": f"q{i}", "question": f"Question {i}: quality {named}?", "meta": meta}
        lines.append(orjson.dumps(item))
    (test_dir / "exam.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def planted_replier(body: dict[str, Any]) -> Any:
    """model-X answers with X's quality for the question; the judge scores an answer its
    quality (alone), or the pair their qualities with 2 more for the one shown first."""
    prompt = body["messages"][0]["content"]
    if body["model"] != "judge":
        label = body["model"].removeprefix("model-").upper()
        quality = re.search(rf"\b{label}=(\d+)", prompt).group(1)
        return f"An answer of quality {quality} by {body['model']}."
    return judge_reply(prompt, first_bonus=2)


def specs(server: FakeServer, labels: str) -> list[str]:
    return [f"{k}=openai:model-{k.lower()}@{server.base_url}" for k in labels]


# ---- the paired difference and the win rate ---------------------------------------------------
async def test_a_planted_difference_is_inside_its_interval_and_zero_is_not(tmp_path):
    """B's answers are 1 better than A's on average (noise -1, 0, +1 in turn): the report's
    B - A is 1 with an interval that excludes 0 and a small p-value; B wins two items in three
    and ties the third (win rate 5/6). With nothing planted, the interval covers 0."""
    write_planted_exam(tmp_path / "planted", 30, {"A": 0, "B": 1})
    write_planted_exam(tmp_path / "even", 30, {"A": 0, "B": 0})
    with FakeServer(replier=planted_replier) as server:
        models = parse_labelled(specs(server, "AB"))
        judge = parse_endpoint(f"openai:judge@{server.base_url}")
        planted = await grade(tmp_path / "planted", models, judge, tmp_path / "out")
        even = await grade(tmp_path / "even", models, judge, tmp_path / "even-out")
    row = planted["overall"]
    assert row["items"] == 30 and row["difference"]["mean"] == 1.0
    lo, hi = row["difference"]["ci95"]
    assert 0 < lo <= 1.0 <= hi
    assert row["difference"]["p_value"] < 0.01
    assert row["win_rate"]["value"] == round(25 / 30, 4)
    assert (
        0.5 < row["win_rate"]["ci95"][0] <= row["win_rate"]["value"] <= row["win_rate"]["ci95"][1]
    )
    for group in planted["groups"].values():  # 15 items each: still a clear difference
        assert group["difference"]["ci95"][0] > 0
    assert planted["bootstrap"]["seed"] == 0
    assert even["overall"]["difference"]["mean"] == 0.0
    lo, hi = even["overall"]["difference"]["ci95"]
    assert lo < 0 < hi and even["overall"]["difference"]["p_value"] > 0.5
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| B - A [95% CI] | p | B win rate [95% CI] |" in table
    d, w = row["difference"], row["win_rate"]
    assert f"| +1.00 [+{d['ci95'][0]:.2f}, +{d['ci95'][1]:.2f}] | " in table
    assert f"| 0.83 [{w['ci95'][0]:.2f}, {w['ci95'][1]:.2f}] |" in table
    assert "sign-flip permutation p-value" in table


def _synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two exchangeable models on `n` items: a shared item difficulty (which pairing must
    remove) and independent judge noise, rounded and clipped to the 1-10 scale."""
    difficulty = rng.uniform(2, 9, size=(n, 1))
    return np.clip(np.rint(difficulty + rng.normal(0, 1.5, size=(n, 2))), 1, 10)


def test_with_no_difference_the_interval_covers_zero_about_95_percent_of_the_time():
    trials, covered, rejected = 400, 0, 0
    for trial in range(trials):
        scores = _synthetic(np.random.default_rng(trial), 40)
        row = score_rows(scores, ["A", "B"], "row", 1000, seed=trial)
        diff = row["against_baseline"]["B"]["difference"]
        covered += diff["ci95"][0] <= 0 <= diff["ci95"][1]
        rejected += diff["p_value"] < 0.05
    # Binomial standard error at 95% over 400 trials: 1.1 points.
    assert 0.91 <= covered / trials <= 0.98, covered / trials
    assert rejected / trials <= 0.08, rejected / trials


def test_the_sign_flip_p_value_is_exact_on_few_items_and_the_same_for_a_seed():
    rng = np.random.default_rng(0)
    # Three items all +1: of the 8 sign patterns, only all + and all - reach |mean| 1.
    assert sign_flip_p(np.array([1.0, 1.0, 1.0]), rng, 1000) == 0.25
    assert sign_flip_p(np.zeros(5), rng, 1000) == 1.0
    scores = _synthetic(np.random.default_rng(7), 60)
    first = score_rows(scores, ["A", "B"], "row", 500, seed=3)
    assert score_rows(scores, ["A", "B"], "row", 500, seed=3) == first
    assert score_rows(scores, ["A", "B"], "row", 500, seed=4) != first


# ---- absolute grading -------------------------------------------------------------------------
def _cached_replies(test_dir: Path) -> int:
    with sqlite3.connect(test_dir / "glan.sqlite") as conn:
        return conn.execute("SELECT count(*) FROM responses").fetchone()[0]


def test_absolute_mode_scores_three_models_and_a_killed_run_resumes_without_reasking(tmp_path):
    """`glan test run --absolute` with three models, killed with SIGKILL while the judge is
    part-way through; the same command again asks only what had not finished (counted on the
    fake server) and reports each model against the first: B is 2 better, C no different."""
    exam, out = tmp_path / "exam", tmp_path / "out"
    write_planted_exam(exam, 12, {"A": 0, "B": 2, "C": 0})
    judged = 0

    def counting(body: dict[str, Any]) -> Any:
        nonlocal judged
        judged += body["model"] == "judge"
        return planted_replier(body)

    total = 12 * 3 * 2  # every answer and every score a distinct request
    with FakeServer(replier=counting, latency_s=0.02) as server:
        args = [
            "test",
            "run",
            str(exam),
            "--absolute",
            "--judge",
            f"openai:judge@{server.base_url}",
        ]
        args += [x for spec in specs(server, "ABC") for x in ("--model", spec)]
        args += ["--out", str(out), "--concurrency", "2", "-q"]
        killed = subprocess.Popen(
            [sys.executable, "-m", "glan", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while judged < 8 and killed.poll() is None:  # 36 scores in all
            assert time.monotonic() < deadline, "the judge was never reached"
            time.sleep(0.005)  # polling for the condition, not waiting on luck
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        assert not (out / "report.json").exists()
        server.wait_idle()  # what the dead run had sent is answered into the void
        finished = _cached_replies(exam)
        assert 8 <= finished < total
        before = server.requests
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert server.requests - before == total - finished
    assert _cached_replies(exam) == total
    report = orjson.loads((out / "report.json").read_bytes())
    assert (report["mode"], report["labels"], report["scored"]) == ("absolute", ["A", "B", "C"], 12)
    assert report["settings"]["absolute"] is True
    row = report["overall"]
    assert row["mean"]["B"] == row["mean"]["A"] + 2 and row["mean"]["C"] == row["mean"]["A"]
    for label in "ABC":
        lo, hi = row["ci95"][label]
        assert lo <= row["mean"][label] <= hi
    b, c = (row["against_baseline"][k]["difference"] for k in "BC")
    # B - A is 1, 2 or 3 on every item: all 12 positive, so only the all-+ and all-- of the
    # 4,096 sign patterns are as extreme (p = 2/4096).
    assert b["mean"] == 2.0 and 1 <= b["ci95"][0] < 2 < b["ci95"][1] <= 3
    assert b["p_value"] == round(2 / 4096, 4)
    assert c["mean"] == 0.0 and c["ci95"][0] < 0 < c["ci95"][1] and c["p_value"] == 1.0
    assert set(report["groups"]) == {"academic_natural_science", "industry_services"}
    assert report["disciplines"]["Sciences/Physics/Optics"]["items"] == 6
    head = "| A mean [95% CI] | B mean [95% CI] | C mean [95% CI] | B - A [95% CI] | p |"
    assert head in result.output and "| all items | 12 |" in result.output
    assert "By discipline" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count('class="card"') == 3 and "Difference from the baseline (A)" in page


async def test_an_absolute_score_that_never_parses_leaves_the_item_unscored(tmp_path):
    write_planted_exam(tmp_path / "exam", 6, {"A": 0, "B": 1})

    def garbled_for_b_on_q2(body: dict[str, Any]) -> Any:
        prompt = body["messages"][0]["content"]
        if body["model"] == "judge" and "Question 2:" in prompt and "by model-b" in prompt:
            return "Nine out of ten, I would say."
        return planted_replier(body)

    with FakeServer(replier=garbled_for_b_on_q2) as server:
        models = parse_labelled(specs(server, "AB"))
        judge = parse_endpoint(f"openai:judge@{server.base_url}")
        report = await grade(
            tmp_path / "exam", models, judge, tmp_path / "out", GradeSettings(absolute=True)
        )
    assert report["scored"] == 5
    [unscored] = report["unscored"]
    assert unscored["id"] == "q2" and "judge reply for B not usable" in unscored["why"]
    records = [
        orjson.loads(x) for x in (tmp_path / "out" / "judgments.jsonl").read_bytes().splitlines()
    ]
    grades = {g["model"]: g for g in next(r for r in records if r["id"] == "q2")["grades"]}
    assert grades["A"]["score"] is not None
    assert grades["B"]["score"] is None and grades["B"]["error"]


def test_absolute_mode_takes_any_number_of_models_and_prices_one_score_per_answer(tmp_path):
    write_planted_exam(tmp_path / "exam", 4, {"A": 0, "B": 0, "C": 0})
    runner = CliRunner()
    base = ["test", "run", str(tmp_path / "exam"), "--judge", "openai:judge@http://h/v1"]
    three = [x for k in "ABC" for x in ("--model", f"{k}=openai:m{k}@http://h/v1")]
    dry = runner.invoke(app, [*base, *three, "--absolute", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert re.search(r"judge\s+│\s+judge\s+│\s+12\s", dry.output)  # 4 questions x 3 answers
    pairwise = runner.invoke(app, [*base, *three, "--dry-run"])
    assert isinstance(pairwise.exception, UserError)  # `glan` prints its one line, exit 2
    assert "--absolute scores any number" in str(pairwise.exception)
    one = runner.invoke(
        app, [*base, "--model", "A=openai:m@http://h/v1", "--absolute", "--dry-run"]
    )
    assert one.exit_code == 0, one.output


def test_rows_of_fewer_than_ten_items_show_no_interval_and_say_why(tmp_path):
    """Three items all +1: a percentile interval would be [1, 1] beside p = 0.25 (the exact
    sign-flip p cannot go lower on three items), so no interval is given, in any form."""
    few = score_rows(np.array([[5.0, 6.0]] * 3), ["A", "B"], "row", 500, seed=0)
    assert few["ci95"] is None and few["no_interval"] == "n<10"
    diff, wins = (
        few["against_baseline"]["B"]["difference"],
        few["against_baseline"]["B"]["win_rate"],
    )
    assert (diff["mean"], diff["ci95"], diff["p_value"]) == (1.0, None, 0.25)
    assert (wins["value"], wins["ci95"]) == (1.0, None)
    ten = score_rows(np.array([[5.0, 6.0]] * 9 + [[6.0, 5.0]]), ["A", "B"], "row", 500, seed=0)
    assert "no_interval" not in ten and ten["against_baseline"]["B"]["difference"]["ci95"]

    records = [
        {
            "id": f"q{i}",
            "meta": {"discipline": "D", "field": "F", "subfield": "S", "group": None},
            "answers": {k: {"text": k} for k in "AB"},
            "grades": [{"model": "A", "score": 5}, {"model": "B", "score": 6}],
        }
        for i in range(3)
    ]
    info = {"judge": {"model": "j", "kind": "openai", "address": ""}, "references": False}
    report = build_absolute_report(records, ["A", "B"], info, 500, 0)
    assert report["overall"]["ci95"] is None and report["overall"]["no_interval"] == "n<10"
    write_absolute_report(report, tmp_path)
    table = (tmp_path / "report.md").read_text()
    assert "| all items | 3 | 5.00 (n<10) | 6.00 (n<10) | +1.00 (n<10) | 0.250 | 1.00 (n<10) |" in (
        table
    )
    assert "no interval on rows of fewer than 10 items" in table
    assert "(n&lt;10)" in (tmp_path / "report.html").read_text()


def _absolute_records(n: int) -> list[dict[str, Any]]:
    """`n` items scored for A, B and C (more than EXACT_FLIPS_UP_TO: p is drawn, not exact)."""
    rng = np.random.default_rng(11)
    scores = np.clip(np.rint(rng.uniform(2, 9, (n, 1)) + rng.normal(0, 1.5, (n, 3))), 1, 10)
    return [
        {
            "id": f"q{i:03d}",
            "meta": {"discipline": "D", "field": "F", "subfield": "S", "group": f"g{i % 2}"},
            "answers": {k: {"text": k} for k in "ABC"},
            "grades": [{"model": k, "score": int(s)} for k, s in zip("ABC", row, strict=True)],
        }
        for i, row in enumerate(scores)
    ]


def test_report_numbers_depend_neither_on_item_order_nor_on_the_other_models_listed():
    info = {"judge": {"model": "j", "kind": "openai", "address": ""}, "references": False}
    records = _absolute_records(40)
    rows = ("overall", "groups", "disciplines")
    forward = build_absolute_report(records, ["A", "B", "C"], info, 500, 0)
    backward = build_absolute_report(records[::-1], ["A", "B", "C"], info, 500, 0)
    assert [forward[k] for k in rows] == [backward[k] for k in rows]
    without_b = build_absolute_report(records, ["A", "C"], info, 500, 0)
    for k in rows:
        for name, row in forward[k].items() if k != "overall" else [("", forward[k])]:
            other = without_b[k][name] if k != "overall" else without_b[k]
            assert row["against_baseline"]["C"] == other["against_baseline"]["C"]
            assert row["ci95"]["C"] == other["ci95"]["C"]

    pairwise = [  # the same items judged side by side, A against B, in both orders
        {
            **{k: r[k] for k in ("id", "meta")},
            "judgments": [
                {"order": o, "first": o[0], "scores": {g["model"]: g["score"] for g in r["grades"]}}
                for o in ("AB", "BA")
            ],
        }
        for r in records
    ]
    forward = build_report(pairwise, ("A", "B"), info, 500, 0)
    backward = build_report(pairwise[::-1], ("A", "B"), info, 500, 0)
    assert [forward[k] for k in rows] == [backward[k] for k in rows]


def test_absolute_results_folders_of_different_model_lists_never_meet():
    hyphens = results_name(["a-b", "c"], absolute=True), results_name(["a", "b-c"], absolute=True)
    assert hyphens[0] != hyphens[1]
    assert results_name(["base", "tuned"], absolute=True) == "absolute-base-tuned"
    ten = [f"model-{i}-" + "x" * 40 for i in range(10)]
    name = results_name(ten, absolute=True)
    assert len(name.encode()) <= 100 and name == results_name(list(ten), absolute=True)
    assert name != results_name(ten[:9], absolute=True)


async def test_grading_refuses_a_results_folder_that_holds_other_models_results(tmp_path):
    write_planted_exam(tmp_path / "exam", 3, {"A": 0, "B": 1, "C": 0})
    with FakeServer(replier=planted_replier) as server:
        judge = parse_endpoint(f"openai:judge@{server.base_url}")
        absolute = GradeSettings(absolute=True)
        out = tmp_path / "out"
        await grade(tmp_path / "exam", parse_labelled(specs(server, "AB")), judge, out, absolute)
        asked = server.requests
        with pytest.raises(UserError, match="holds the results of A, B"):
            await grade(
                tmp_path / "exam", parse_labelled(specs(server, "AC")), judge, out, absolute
            )
        with pytest.raises(UserError, match=r"holds the results of A, B \(absolute\)"):
            await grade(tmp_path / "exam", parse_labelled(specs(server, "AB")), judge, out)
        assert server.requests == asked  # refused before asking anything
        again = await grade(
            tmp_path / "exam", parse_labelled(specs(server, "AB")), judge, out, absolute
        )
    assert again["labels"] == ["A", "B"]  # the same models: resumed
