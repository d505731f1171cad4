"""Benchmark data packages fetched once into glan's cache, through the user's own pip, from a
tiny local wheel index (no network, never the big wheels)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from glan import benchmark_packages as bp
from glan.cli import app as cli_app
from glan.errors import UserError
from glan.evaluate import registry, splits

TINY = bp.DataPackage(
    "tiny-bench-data",
    "1.0",
    "tiny_bench_data",
    ("tiny_bench_data/data/keep/",),
    ("gsm8k",),
    900_000,
)
MEMBERS = {
    "tiny_bench_data/__init__.py": "import a_heavy_dependency\n",
    "tiny_bench_data/data/keep/test.jsonl": '{"question": "1+1?"}\n',
    "tiny_bench_data/data/keep/train/a.jsonl": '{"question": "2+2?"}\n',
    "tiny_bench_data/data/other/big.jsonl": "not read by glan\n",
}


def build_wheel(folder: Path, dist: str = "tiny-bench-data", version: str = "1.0") -> Path:
    """A real, minimal wheel: the members, METADATA, WHEEL and RECORD."""
    stem = f"{dist.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = dict(MEMBERS)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
    files[f"{info}/WHEEL"] += "Tag: py3-none-any\n"
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture
def index(tmp_path, monkeypatch):
    """pip sees only a local folder of wheels; glan's cache lies in tmp_path; the catalogue
    holds only the tiny package."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("GLAN_BENCHMARK_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("GLAN_NO_FETCH", raising=False)
    monkeypatch.setattr(bp, "PACKAGES", {TINY.import_name: TINY})
    monkeypatch.setattr(bp, "_failures", {})
    return wheels


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_fetch_keeps_only_the_data_and_marks_it_complete(index, tmp_path):
    assert bp.package_dir("tiny_bench_data") is None
    (got,) = bp.fetch([TINY])
    assert got.status == "fetched"
    copy = tmp_path / "cache" / "tiny-bench-data-1.0"
    assert got.path == copy / "tiny_bench_data" == bp.package_dir("tiny_bench_data")
    assert files_under(copy) == {
        "glan-fetch.json",
        "tiny_bench_data/data/keep/test.jsonl",
        "tiny_bench_data/data/keep/train/a.jsonl",
    }
    marker = json.loads((copy / "glan-fetch.json").read_text())
    wheel = index / "tiny_bench_data-1.0-py3-none-any.whl"
    assert marker == {
        "dist": "tiny-bench-data",
        "version": "1.0",
        "keep": ["tiny_bench_data/data/keep/"],
        "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "members": 2,
    }
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        ".tiny-bench-data.lock",
        copy.name,
    ]


def test_splits_and_decontamination_read_the_fetched_copy(index):
    from glan.post.benchmarks import KnownBenchmark, packaged_file

    known = KnownBenchmark(
        "tiny_bench_data", "data/keep/test.jsonl", "question", ("", "", "", ""), ""
    )
    assert packaged_file(known) is None and splits.package_dir("tiny_bench_data") is None
    bp.fetch([TINY])
    assert packaged_file(known) == splits.package_dir("tiny_bench_data") / known.path


def test_an_installed_package_wins_over_the_cache(index, tmp_path, monkeypatch):
    bp.fetch([TINY])
    site = tmp_path / "site"
    (site / "tiny_bench_data" / "data" / "keep").mkdir(parents=True)
    (site / "tiny_bench_data" / "__init__.py").write_text("raise ImportError('never imported')\n")
    monkeypatch.syspath_prepend(str(site))
    assert bp.package_dir("tiny_bench_data") == site / "tiny_bench_data"
    (got,) = bp.fetch([TINY])
    assert (got.status, got.path) == ("installed", site / "tiny_bench_data")


def test_a_wheel_other_than_the_pinned_one_is_refused(index, tmp_path, monkeypatch):
    pinned = dataclasses.replace(TINY, sha256="0" * 64)  # what glan read; the index has another
    monkeypatch.setattr(bp, "PACKAGES", {pinned.import_name: pinned})
    (got,) = bp.fetch([pinned])
    assert got.status == "failed" and "is not the wheel glan pinned" in got.why
    assert bp.package_dir("tiny_bench_data") is None
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".tiny-bench-data.lock"]


def test_a_package_that_only_shares_the_import_name_is_not_the_data(index, tmp_path, monkeypatch):
    site = tmp_path / "site"  # another distribution, or an older version, without the data
    (site / "tiny_bench_data").mkdir(parents=True)
    (site / "tiny_bench_data" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    assert bp.package_dir("tiny_bench_data") is None
    (got,) = bp.fetch([TINY])
    assert got.status == "fetched" and (got.path / "data" / "keep" / "test.jsonl").is_file()
    assert bp.package_dir("tiny_bench_data") == got.path


def test_a_copy_made_by_a_glan_that_kept_less_is_fetched_again(index, monkeypatch):
    bp.fetch([TINY])
    newer = dataclasses.replace(TINY, keep=(*TINY.keep, "tiny_bench_data/data/other/"))
    monkeypatch.setattr(bp, "PACKAGES", {newer.import_name: newer})  # the same pinned wheel
    assert bp.package_dir("tiny_bench_data") is None
    (got,) = bp.fetch([newer])
    assert got.status == "fetched" and (got.path / "data" / "other" / "big.jsonl").is_file()


def test_a_run_whose_data_is_here_does_not_wait_for_another_runs_fetch(index, tmp_path):
    from glan.testing.deps import require

    bp.fetch([TINY])
    lock = require("filelock", "glan[eval]'s fetch lock").FileLock
    with lock(str(tmp_path / "cache" / ".tiny-bench-data.lock")):  # another run, fetching
        got = []
        worker = threading.Thread(target=lambda: got.append(bp.fetch_one(TINY)), daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert [g.status for g in got] == ["cached"]


def test_a_package_the_index_lacks_gives_one_line_and_no_folder(index, tmp_path, monkeypatch):
    absent = bp.DataPackage("tiny-bench-data", "9.9", "tiny_bench_data", TINY.keep, ("gsm8k",), 1)
    monkeypatch.setattr(bp, "PACKAGES", {absent.import_name: absent})
    (got,) = bp.fetch([absent])
    assert got.status == "failed" and got.path is None
    assert got.why == "No matching distribution found for tiny-bench-data==9.9"  # pip's last
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".tiny-bench-data.lock"]
    assert bp.package_dir("tiny_bench_data") is None
    line = registry.how_to_get(registry.BENCHMARKS["gsm8k"])
    assert line.startswith(
        "no local copy: glan could not fetch tiny-bench-data==9.9 from the package registry ("
        + got.why
    ), line


def test_a_second_fetch_downloads_nothing(index, monkeypatch):
    bp.fetch([TINY])
    monkeypatch.setenv("PIP_FIND_LINKS", str(index.parent / "empty"))  # nothing to download
    (got,) = bp.fetch([TINY])
    assert (got.status, got.path) == ("cached", bp.package_dir("tiny_bench_data"))


def test_an_interrupted_extraction_is_not_used_and_is_redone(index, tmp_path):
    cache = tmp_path / "cache"
    half = cache / "tiny-bench-data-1.0" / "tiny_bench_data" / "data" / "keep"
    half.mkdir(parents=True)
    (half / "test.jsonl").write_text('{"question": "cut off')
    (cache / ".partial-tiny-bench-data-x1" / "tiny_bench_data").mkdir(parents=True)
    assert bp.package_dir("tiny_bench_data") is None
    (got,) = bp.fetch([TINY])
    assert got.status == "fetched"
    assert (got.path / "data" / "keep" / "test.jsonl").read_text() == MEMBERS[
        "tiny_bench_data/data/keep/test.jsonl"
    ]
    assert sorted(p.name for p in cache.iterdir()) == [
        ".tiny-bench-data.lock",
        "tiny-bench-data-1.0",
    ]


def test_no_fetch_fetches_nothing_and_the_skip_line_says_how(index, tmp_path, monkeypatch):
    assert bp.fetch_for(["gsm8k"], no_fetch=True) == []
    monkeypatch.setenv("GLAN_NO_FETCH", "1")
    assert bp.fetch_for(["gsm8k"]) == []
    assert not (tmp_path / "cache").exists()
    line = registry.how_to_get(registry.BENCHMARKS["gsm8k"])
    assert line.startswith(
        "no local copy of tiny-bench-data==1.0 (not fetched): `glan eval --fetch-only`"
    ), line
    monkeypatch.delenv("GLAN_NO_FETCH")
    assert [got.status for got in bp.fetch_for(["gsm8k", "bbh"])] == ["fetched"]


def test_the_progress_shows_one_line_per_package_fetched(index):
    screen = Console(file=io.StringIO(), record=True, width=120)
    bp.fetch([TINY], screen)
    text = screen.export_text()
    assert "tiny-bench-data==1.0 (900 kB)" in text and "done" in text, text


def test_glan_eval_fetch_only_prints_progress_and_places(index, tmp_path):
    result = CliRunner().invoke(cli_app, ["eval", "--fetch-only"])
    assert result.exit_code == 0, result.output
    place = tmp_path / "cache" / "tiny-bench-data-1.0" / "tiny_bench_data"
    assert "tiny-bench-data==1.0 (900 kB)" in result.stderr, result.stderr
    assert result.stdout == f"tiny-bench-data==1.0: fetched: {place}\n"
    again = CliRunner().invoke(cli_app, ["eval", "--fetch-only"])
    assert again.stdout == f"tiny-bench-data==1.0: cached: {place}\n"


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--model", "m"], {}), (["--no-fetch"], {}), ([], {"GLAN_NO_FETCH": "1"})],
)
def test_fetch_only_refuses_what_it_would_ignore(index, tmp_path, monkeypatch, args, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli_app, ["eval", "--fetch-only", *args])
    assert isinstance(result.exception, UserError)  # one line, exit 2 (glan.cli.app.main)
    assert str(result.exception).startswith("--fetch-only fetches and evaluates nothing")
    assert not (tmp_path / "cache").exists()  # nothing was fetched


def test_a_mistyped_model_is_one_line_before_anything_is_fetched(index, tmp_path, monkeypatch):
    from glan.testing.deps import require

    require("lm_eval", "glan[eval]")
    monkeypatch.setattr(bp, "fetch", lambda *a, **k: pytest.fail("fetched before the check"))
    args = ["eval", "--model", "tuned=./no/such/model", "--benchmarks", "gsm8k"]
    result = CliRunner().invoke(cli_app, args)
    assert isinstance(result.exception, UserError)
    assert str(result.exception) == "model not found: tuned=./no/such/model"


def test_the_leakage_test_fetches_only_benchmarks_with_two_splits(index, monkeypatch, tmp_path):
    from glan.evaluate import leakage
    from glan.testing.deps import require

    require("lm_eval", "glan[eval]")
    asked: list[list[str]] = []
    monkeypatch.setattr(bp, "fetch_for", lambda names, *a: asked.append(list(names)) or [])
    monkeypatch.setattr(leakage, "check", lambda *a: [])  # the losses are not this test's
    args = ["eval", "--model", str(tmp_path), "--leakage", "--benchmarks", "gsm8k,arc_easy,mmlu"]
    CliRunner().invoke(cli_app, [*args, "--out", str(tmp_path / "out")])
    assert asked == [["arc_easy", "mmlu"]]


def test_tests_needing_the_data_find_the_fetched_copy(index, monkeypatch):
    from glan.testing.deps import need

    monkeypatch.setenv("CI", "true")  # a missing package fails in CI instead of skipping
    with pytest.raises(pytest.fail.Exception, match="tiny_bench_data is missing in CI"):
        need("tiny_bench_data", "the tiny data", data_only=True)
    bp.fetch([TINY])
    assert need("tiny_bench_data", "the tiny data", data_only=True) is None


def test_a_cache_that_cannot_be_written_gives_one_line(index, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GLAN_BENCHMARK_DATA", str(blocker / "cache"))
    (got,) = bp.fetch([TINY])
    assert got.status == "failed" and "a-file" in got.why and "\n" not in got.why, got.why


def test_an_unreachable_index_is_named_in_the_line(index, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_FIND_LINKS", str(index.parent / "empty"))
    monkeypatch.setenv("PIP_RETRIES", "1")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    (got,) = bp.fetch([TINY])
    assert got.why == (
        "No matching distribution found for tiny-bench-data==1.0 "
        "(the package index could not be reached: offline?)"
    )


FETCH_TINY = f"""
from glan import benchmark_packages as bp
bp.PACKAGES = {{"tiny_bench_data": bp.DataPackage{tuple(TINY.__dict__.values())!r}}}
print("started", flush=True)
print(bp.fetch_one(bp.PACKAGES["tiny_bench_data"]).status)
"""


def test_two_runs_at_once_fetch_once(index, tmp_path):
    import subprocess
    import sys

    from glan.testing.deps import require

    with require("filelock", "glan[eval]'s fetch lock").FileLock(
        str(tmp_path / "cache" / ".tiny-bench-data.lock")
    ):  # both start while the package is being fetched by a third
        runs = [
            subprocess.Popen([sys.executable, "-c", FETCH_TINY], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        assert [run.stdout.readline().strip() for run in runs] == ["started", "started"]
    statuses = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
    assert statuses == ["cached", "fetched"]
