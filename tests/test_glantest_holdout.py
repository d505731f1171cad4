"""GLAN-Test's hold-out checks: a subject renamed with filler words or a paraphrased question
is caught at build; `glan test check` finds an exam item in an exported training file; answers
cut at the token limit are counted. Against a hand-made run and the shared fake endpoint."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from glan.aio import run as run_async
from glan.cli import app
from glan.export import export
from glan.glantest.build import build_exam
from glan.glantest.discipline import ExamSettings
from glan.glantest.endpoints import parse_endpoint
from glan.glantest.holdout import HoldoutSettings
from glan.glantest.subject_match import SubjectScreen
from glan.testing.deps import require
from glan.testing.fake_server import FakeServer, default_replier
from glan.testing.runs import config_for, physics_taxonomy, read_jsonl

LEXICAL = HoldoutSettings(semantic=False)
PRICE_CEILING = (
    "Explain how a price ceiling set below the equilibrium price affects the quantity "
    "supplied and the quantity demanded in a competitive market."
)
# A rewording MinHash cannot see (few word trigrams in common); MiniLM puts it at 0.94.
PARAPHRASE = (
    "In a competitive market, how does a price ceiling below the equilibrium price change the "
    "quantities demanded and supplied? Explain."
)
# Another question on the same template: MiniLM puts it at 0.885 to PRICE_CEILING, above the
# 0.8 at which `check` lists a possible paraphrase but below the 0.9 at which a build drops one.
PRICE_FLOOR = (
    "Explain how a price floor set above the equilibrium price affects the quantity "
    "supplied and the quantity demanded in a competitive market."
)
TRAINING = [
    ("t1", "Introduction to Microeconomics", PRICE_CEILING),
    (
        "t2",
        "Retail Operations Management",
        "What costs does a retailer weigh when sizing its inventory?",
    ),
    ("t3", "Organic Chemistry", "Why does a tertiary carbocation form more readily?"),
]


def write_run(run: Path, rows: list[tuple[str, str, str]] = TRAINING) -> Path:
    """A run directory as glan writes it, as far as the hold-out reads it."""
    run.mkdir(parents=True)
    records = [
        {
            "id": record_id,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "An answer."},
            ],
            "meta": {"subject": subject, "discipline": "Economics"},
        }
        for record_id, subject, question in rows
    ]
    (run / "instructions.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return run


def listing(names: list[str], plant: list[str] | None = None) -> Callable[[dict[str, Any]], Any]:
    """The fake replies, except that every subject listing offers `names` first, and the
    first questions asked are `plant`'s."""
    plant = list(plant or [])

    def reply(body: dict[str, Any]) -> Any:
        answer = default_replier(body)
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if name == "subjects":
            for entry, subject in zip(answer["subjects"], names, strict=False):
                entry["name"] = subject
        elif name == "question" and plant:
            return {"question": plant.pop(0)}
        return answer

    return reply


def build(server: FakeServer, out: Path, run: Path, holdout: HoldoutSettings, **kw: Any):
    return run_async(
        build_exam(
            config_for(server),
            physics_taxonomy("Optics"),
            out,
            ExamSettings(per_discipline=4, per_subject=2),
            run_dir=run,
            holdout=holdout,
            **kw,
        )
    )


def test_a_subject_renamed_with_filler_words_is_held_out_and_reported(tmp_path):
    run = write_run(tmp_path / "run")
    offered = ["Principles of Microeconomics", "Retail Store Operations Management"]
    with FakeServer(replier=listing(offered)) as server:
        manifest = build(server, tmp_path / "exam", run, LEXICAL)
    exam_subjects = {i["meta"]["subject"] for i in read_jsonl(tmp_path / "exam" / "exam.jsonl")}
    assert len(read_jsonl(tmp_path / "exam" / "exam.jsonl")) == 4  # from other subjects
    assert not exam_subjects & set(offered)
    held = manifest["held_out"]
    assert held["subjects_too_close"] == [
        {
            "subject": "Principles of Microeconomics",
            "close_to": "Introduction to Microeconomics",
            "check": "name",
            "score": 1.0,
        },
        {
            "subject": "Retail Store Operations Management",
            "close_to": "Retail Operations Management",
            "check": "tokens",
            "score": 0.75,
        },
    ]
    assert held["listed_subjects_skipped_as_run_subjects"] == 2
    assert held["subject_checks"] == ["name", "tokens"]
    assert manifest["overlap"]["checks"] == ["exact", "near"]


def test_subject_names_differently_worded_are_told_apart_from_different_subjects():
    screen = SubjectScreen(["Introduction to Microeconomics", "Calculus I", "Organic Chemistry"])
    found = screen.match(
        ["Fundamentals of Micro-economics", "Advanced Calculus III", "Macroeconomics"]
    )
    assert [(m.close_to, m.check) if m else None for m in found] == [
        ("Introduction to Microeconomics", "name"),
        ("Calculus I", "name"),
        None,
    ]
    assert screen.match(["Inorganic Chemistry", "Chemistry of Polymers"]) == [None, None]


# Different courses: a word that tells them apart is no filler, and two of three words shared
# are not enough (Jaccard 2/3 < 0.75).
DIFFERENT_COURSES = [
    ("Special Relativity", "General Relativity"),
    ("Special Education", "Elementary Education"),
    ("Survey Research Methods", "Research Methods"),
    ("Level Design", "Design"),
    ("Part Design", "Design"),
    ("Level Design", "Part Design"),
    ("American Literature", "African American Literature"),
    ("European History", "Modern European History"),
    ("Computer Networks", "Computer Network Security"),
]


@pytest.mark.parametrize(("listed", "run"), DIFFERENT_COURSES)
def test_different_courses_sharing_words_are_not_taken_for_one_another(listed, run):
    assert SubjectScreen([run]).match([listed]) == [None]
    assert SubjectScreen([listed]).match([run]) == [None]


def test_the_token_check_takes_three_of_four_words_and_its_threshold_is_a_setting():
    run = ["Retail Operations Management", "Retail Management", "Introduction to Microeconomics"]
    screen = SubjectScreen(run)
    listed = ["Principles of Microeconomics", "Retail Store Operations Management"]
    [same, ops, two_of_three] = screen.match([*listed, "Retail Store Management"])
    assert two_of_three is None
    assert same is not None and (same.close_to, same.check) == (
        "Introduction to Microeconomics",
        "name",
    )
    assert ops is not None and (ops.check, ops.score) == ("tokens", 0.75)
    looser = SubjectScreen(["African American Literature"], HoldoutSettings(token_threshold=0.6))
    [found] = looser.match(["American Literature"])
    assert found is not None and (found.check, found.score) == ("tokens", round(2 / 3, 4))


@pytest.mark.slow
def test_subject_names_alike_in_meaning_are_caught_by_their_embeddings():
    require("sentence_transformers", "glan[semantic], after torch's CPU build")
    from glan.glantest.holdout import encoder_for

    encode = encoder_for(HoldoutSettings(semantic=True))
    run = ["Microeconomics", "Retail Management"]
    listed = ["Microeconomic Analysis", "Macroeconomics", "Hospitality Management"]
    assert SubjectScreen(run).match(listed) == [None, None, None]  # no word set is close
    found = SubjectScreen(run, HoldoutSettings(), encode).match(listed)
    assert found[0] is not None and (found[0].close_to, found[0].check) == (
        "Microeconomics",
        "embedding",
    )
    assert found[0].score >= 0.9
    assert found[1:] == [None, None]


@pytest.mark.slow
def test_a_paraphrased_training_question_is_dropped_by_the_embedding_check(tmp_path):
    require("sentence_transformers", "glan[semantic], after torch's CPU build")
    run = write_run(tmp_path / "run")
    with FakeServer(replier=listing([], [PARAPHRASE])) as server:
        lexical = build(server, tmp_path / "lexical", run, LEXICAL)
    kept = [i["question"] for i in read_jsonl(tmp_path / "lexical" / "exam.jsonl")]
    assert PARAPHRASE in kept and lexical["overlap"]["dropped"] == []  # MinHash misses it

    with FakeServer(replier=listing([], [PARAPHRASE, PRICE_FLOOR])) as server:
        manifest = build(server, tmp_path / "exam", run, HoldoutSettings())
    overlap = manifest["overlap"]
    [dropped] = overlap["dropped"]
    assert (dropped["of"], dropped["kind"], dropped["source"]) == ("t1", "semantic", "training")
    assert dropped["score"] >= 0.9
    assert overlap["checks"] == ["exact", "near", "semantic"]
    assert overlap["semantic"] == {"model": "all-MiniLM-L6-v2", "threshold": 0.9}
    assert overlap["found_semantic_with_training"] == 1
    questions = [i["question"] for i in read_jsonl(tmp_path / "exam" / "exam.jsonl")]
    assert len(questions) == 4 and PARAPHRASE not in questions  # replaced
    assert PRICE_FLOOR in questions  # the same template, another question: kept


def write_exam(exam: Path, rows: list[tuple[str, str, str]]) -> Path:
    """An exam directory: (id, subject, question) per item."""
    exam.mkdir(parents=True)
    meta = {
        "field": "Social Sciences",
        "subfield": "Economics",
        "discipline": "Economics",
        "group": None,
        "level": "introductory",
        "sessions": ["s"],
        "concepts": ["c"],
        "strategy": "single",
        "question_model": "m",
    }
    lines = [
        orjson.dumps({"id": i, "question": q, "meta": {**meta, "subject": s}}) for i, s, q in rows
    ]
    (exam / "exam.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return exam


EXAM = [
    ("e1", "Public Finance", "Why do governments tax goods with inelastic demand?"),
    ("e2", "Labour Economics", "How does a minimum wage above equilibrium affect employment?"),
]


@pytest.mark.slow
def test_glan_test_check_exits_1_on_a_leaked_item_and_0_on_clean_exports(tmp_path):
    """An Alpaca export holding a paraphrase of an exam question and a question on the same
    template: both listed as possible paraphrases, which fail the check only with --strict; an
    exact copy fails it always; then a Parquet export without them is clean."""
    require("sentence_transformers", "glan[semantic], after torch's CPU build")
    exam = write_exam(
        tmp_path / "exam",
        [*EXAM, ("e3", "Welfare Economics", PRICE_CEILING), ("e4", "Price Theory", PRICE_FLOOR)],
    )
    leaked = write_run(tmp_path / "leaked", [*TRAINING[1:], ("x1", "Micro", PARAPHRASE)])
    alpaca = str(export(leaked, "alpaca").folder)
    runner = CliRunner()
    result = runner.invoke(app, ["test", "check", str(exam), alpaca])
    assert result.exit_code == 0, result.output
    assert "embeddings (all-MiniLM-L6-v2, cosine >= 0.8: possible paraphrases)" in result.output
    assert "possible paraphrases of a training question: 2" in result.output
    rows = [line for line in result.output.splitlines() if "semantic" in line and "│" in line]
    # Alpaca rows keep no id: the training record is named by its file and line.
    assert len(rows) == 2 and "e3" in rows[0] and "train.jsonl:3" in rows[0] and "e4" in rows[1]
    assert "no leaks; to review: 2 possible paraphrase(s)" in result.output
    assert "not checked: the training files name no subjects" in result.output
    strict = runner.invoke(app, ["test", "check", str(exam), alpaca, "--strict"])
    assert strict.exit_code == 1, strict.output
    assert "LEAKS: 0 question(s), 0 subject(s); with --strict: 2 possible paraphrase(s)" in (
        strict.output
    )

    copied = write_run(tmp_path / "copied", [*TRAINING[1:], ("x2", "Labour", EXAM[1][2])])
    result = runner.invoke(app, ["test", "check", str(exam), str(copied)])
    assert result.exit_code == 1, result.output
    assert "LEAKS: 1 question(s)" in result.output

    clean = write_run(tmp_path / "clean", TRAINING[1:])
    parquet = export(clean, "parquet").folder / "train.parquet"
    found = tmp_path / "found.json"
    result = runner.invoke(app, ["test", "check", str(exam), str(parquet), "--json", str(found)])
    assert result.exit_code == 0, result.output
    assert "clean: no exam question or subject found in the training data" in result.output
    assert "2 training subjects (name, tokens, embedding)" in result.output
    assert orjson.loads(found.read_bytes())["clean"] is True


def test_glan_test_check_reports_exact_leaks_and_close_subjects_without_embeddings(tmp_path):
    exam = write_exam(tmp_path / "exam", [*EXAM, ("e3", "Principles of Microeconomics", "Q?")])
    run = write_run(tmp_path / "run", [*TRAINING, ("x2", "Labour", EXAM[1][2])])
    sharegpt = export(run, "sharegpt").folder / "train.jsonl"
    messages = export(run, "messages").folder
    answers = tmp_path / "answers.jsonl"  # no user turn: not a training question
    answers.write_bytes(b'{"messages": [{"role": "assistant", "content": "An answer."}]}\n')
    out = tmp_path / "found.json"
    args = ["test", "check", str(exam), str(sharegpt), str(messages), str(answers)]
    result = CliRunner().invoke(app, [*args, "--no-semantic", "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "exact + MinHash only" in result.output
    assert "(1 record(s) without a user turn skipped)" in result.output
    found = orjson.loads(out.read_bytes())
    assert found["records_without_question"] == 1
    # Both files hold the copy; the first one read is named.
    assert [(x["exam_id"], x["of"], x["kind"]) for x in found["leaks"]] == [("e2", "x2", "exact")]
    assert found["training_questions"] == 8 and found["training_subjects"] == 4
    assert [(m["subject"], m["close_to"]) for m in found["subjects_too_close"]] == [
        ("Principles of Microeconomics", "Introduction to Microeconomics")
    ]
    assert "exam subjects too close to a training subject: 1" in result.output


def test_glan_test_check_fails_on_a_renamed_subject_and_lists_subjects_sharing_most_words(
    tmp_path,
):
    """The same name once normalised is a leak; most of the same words (tokens) is listed to
    read and fails only with --strict; the token threshold is an option."""
    run = write_run(tmp_path / "run")
    shared = write_exam(tmp_path / "shared", [("e1", "Retail Store Operations Management", "Q?")])
    renamed = write_exam(tmp_path / "renamed", [("e1", "Principles of Microeconomics", "Q?")])
    runner = CliRunner()

    def check(exam: Path, *more: str) -> tuple[int, str, dict[str, Any]]:
        out = tmp_path / "found.json"
        args = ["test", "check", str(exam), str(run), "--no-semantic", "--json", str(out), *more]
        result = runner.invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.exit_code, result.output, orjson.loads(out.read_bytes())

    code, output, found = check(shared)
    assert code == 0, output
    assert [(m["close_to"], m["check"], m["score"]) for m in found["subjects_possibly_close"]] == [
        ("Retail Operations Management", "tokens", 0.75)
    ]
    assert found["subjects_too_close"] == []
    assert "exam subjects possibly close to a training subject: 1" in output
    assert "no leaks; to review: 1 subject(s) possibly close" in output
    code, output, _ = check(shared, "--strict")
    assert code == 1, output
    assert (
        "LEAKS: 0 question(s), 0 subject(s); with --strict: 1 subject(s) possibly close" in output
    )
    code, output, found = check(shared, "--subject-token-threshold", "0.8")
    assert code == 0 and found["subjects_possibly_close"] == [], output
    assert "clean: no exam question or subject found" in output

    code, output, found = check(renamed)
    assert code == 1 and "LEAKS: 0 question(s), 1 subject(s)" in output, output
    assert [m["check"] for m in found["subjects_too_close"]] == ["name"]


def test_glan_test_check_reads_the_hf_export_its_folder_its_dataset_and_an_arrow_file(tmp_path):
    require("datasets", "glan[hf], to write the hf export")
    exam = write_exam(tmp_path / "exam", EXAM)
    run = write_run(tmp_path / "run", [*TRAINING, ("x2", "Labour", EXAM[1][2])])
    folder = export(run, "hf").folder
    [arrow] = sorted((folder / "dataset").glob("*.arrow"))
    for target in (folder, folder / "dataset", arrow):
        out = tmp_path / "found.json"
        args = ["test", "check", str(exam), str(target), "--no-semantic", "--json", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "LEAKS: 1 question(s)" in result.output, result.output
        found = orjson.loads(out.read_bytes())
        assert [(x["exam_id"], x["of"], x["kind"]) for x in found["leaks"]] == [
            ("e2", "x2", "exact")
        ]
        assert found["training_questions"] == 4 and found["training_subjects"] == 4
        assert found["training_files"] == [str(arrow)]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.jsonl", None, "training file not found"),
        ("data.csv", b"a,b\n", "unknown format (expected .jsonl, .parquet or .arrow)"),
        ("other.jsonl", b'{"text": "hi"}\n', "other.jsonl:1: unknown record format"),
        ("empty.jsonl", b"", "no training question (a record's user turns) in empty.jsonl"),
        (
            "answers.jsonl",
            b'{"messages": [{"role": "assistant", "content": "only an answer"}]}\n',
            "no training question (a record's user turns) in answers.jsonl",
        ),
    ],
)
def test_glan_test_check_user_errors_are_one_line_and_exit_2(tmp_path, name, content, says):
    exam = write_exam(tmp_path / "exam", EXAM)
    if content is not None:
        (tmp_path / name).write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "glan", "test", "check", str(exam), str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert says in line


def _cut(text: str) -> bool:
    """Whether the fake endpoint cuts the answer to this question (about half of them)."""
    return hashlib.sha256(text.encode()).digest()[0] % 2 == 0


def test_reference_answers_cut_at_the_token_limit_are_counted(tmp_path):
    run = write_run(tmp_path / "run")

    def cut_references(body: dict[str, Any]) -> str | None:
        return "length" if body["model"] == "ref" and _cut(body["messages"][0]["content"]) else None

    with FakeServer(replier=listing([]), fault_when=cut_references) as server:
        reference = parse_endpoint(f"openai:ref@{server.base_url}")
        manifest = build(server, tmp_path / "exam", run, LEXICAL, reference=reference)
    items = read_jsonl(tmp_path / "exam" / "exam.jsonl")
    expected = {i["id"] for i in items if _cut(i["question"])}
    assert 0 < len(expected) < len(items)  # some cut, some not: the count means something
    refs = read_jsonl(tmp_path / "exam" / "references.jsonl")
    assert {r["id"] for r in refs if r.get("finish_reason") == "length"} == expected
    assert manifest["references"]["cut_at_token_limit"] == len(expected)


def test_model_answers_cut_at_the_token_limit_are_counted_in_the_report(tmp_path):
    questions = [f"Question {k}: what is {k} squared?" for k in range(6)]
    exam = write_exam(tmp_path / "exam", [(f"q{k}", "S", q) for k, q in enumerate(questions)])
    expected = [f"q{k}" for k, q in enumerate(questions) if _cut(q)]
    assert 0 < len(expected) < len(questions)

    def reply(body: dict[str, Any]) -> Any:
        if body["model"] == "judge":
            return {"explanation": "fine", "score_1": 6, "score_2": 4}
        return "An answer that goes on at some length about the question."

    def cut_a(body: dict[str, Any]) -> str | None:
        return "length" if body["model"] == "a" and _cut(body["messages"][0]["content"]) else None

    with FakeServer(replier=reply, fault_when=cut_a) as server:
        url = server.base_url
        result = CliRunner().invoke(
            app,
            [
                "test",
                "run",
                str(exam),
                "--model",
                f"A=openai:a@{url}",
                "--model",
                f"B=openai:b@{url}",
                "--judge",
                f"openai:judge@{url}",
                "-q",
            ],
        )
    assert result.exit_code == 0, result.output
    said = f"Answers cut at the token limit (graded as given): A {len(expected)} ({', '.join(expected)}), B 0."
    assert said in result.output
    results = exam / "results" / "A-vs-B"
    report = orjson.loads((results / "report.json").read_bytes())
    assert report["cut_at_token_limit"] == {
        "A": {"count": len(expected), "ids": expected},
        "B": {"count": 0, "ids": []},
    }
    assert said in (results / "report.md").read_text()
    assert said in (results / "report.html").read_text()
