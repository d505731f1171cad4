"""Export formats read back by the libraries that consume them; the card; push to a fake hub."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from glan.api import generate
from glan.cli import app
from glan.config import GenerateConfig
from glan.export import export
from glan.testing.fake_hub import FakeHub


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from glan.testing.fake_server import FakeServer

    out = tmp_path_factory.mktemp("export") / "run"
    with FakeServer() as server:
        cfg = GenerateConfig.model_validate(
            {"llm": {"backend": "openai", "base_url": server.base_url, "model": "fake-model"}}
        )
        generate(out, 12, cfg)
    return out


# A shard size that makes several files of the fixture's 12 records, per format (a Parquet or
# Arrow file also holds its schema: about 3 kB here).
SEVERAL = {"messages": 3_000, "parquet": 6_000, "hf": 6_000}


def questions(run_dir: Path) -> list[str]:
    return [
        orjson.loads(line)["messages"][0]["content"]
        for line in (run_dir / "instructions.jsonl").read_bytes().splitlines()
    ]


@pytest.mark.parametrize("fmt", ["messages", "alpaca", "sharegpt"])
def test_jsonl_formats_load_with_datasets(run_dir, fmt, tmp_path):
    from datasets import load_dataset

    target = export(run_dir, fmt, tmp_path / fmt).folder
    ds = load_dataset("json", data_files=str(target / "train.jsonl"), split="train")
    assert len(ds) == 12
    first = ds[0]
    if fmt == "messages":
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
        assert first["meta"]["discipline"]
    elif fmt == "alpaca":
        assert first["instruction"] == questions(run_dir)[0] and first["output"]
    else:
        assert [t["from"] for t in first["conversations"]] == ["human", "gpt"]


def test_parquet_reads_back_with_pandas_and_pyarrow(run_dir, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    target = export(run_dir, "parquet", tmp_path / "pq").folder
    frame = pd.read_parquet(target / "train.parquet")
    assert len(frame) == 12 and list(frame.columns) == ["id", "messages", "meta"]
    table = pq.read_table(target / "train.parquet")
    assert table.column("messages")[0].as_py()[0]["content"] == questions(run_dir)[0]


def test_hf_dataset_loads_from_disk(run_dir, tmp_path):
    from datasets import load_from_disk

    target = export(run_dir, "hf", tmp_path / "hf").folder
    ds = load_from_disk(str(target / "dataset"))
    assert len(ds) == 12 and ds[0]["messages"][0]["content"] == questions(run_dir)[0]


def test_card_describes_counts_models_and_cleaning(run_dir, tmp_path):
    target = export(run_dir, "messages", tmp_path / "m").folder
    card = (target / "README.md").read_text()
    assert "12 question-answer pairs" in card and "fake-model" in card
    assert "| answers |" in card and "Not cleaned" in card and "License" in card


def test_card_names_the_version_the_records_and_the_cumulative_cost(run_dir, tmp_path):
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    target = export(run_dir, "messages", tmp_path / "m").folder
    card = (target / "README.md").read_text()
    assert "made with glan 0.1.0" in card and "https://github.com/)" not in card
    sha = hashlib.sha256((run_dir / "instructions.jsonl").read_bytes()).hexdigest()
    assert f"sha256 `{sha}`" in card
    requests = sum(r["requests"] for m in manifest["usage"].values() for r in m.values())
    assert f"| **total** | | {requests:,} |" in card
    assert f"${manifest['cost_usd']:.4f} |" in card.split("| **total**")[1].splitlines()[0]


def test_hf_format_without_datasets_is_one_line_and_leaves_no_dir(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    target = tmp_path / "new" / "hf"
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--format", "hf", "--out", str(target)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == "error: --format hf needs: pip install 'glan[hf]'"
    assert not (tmp_path / "new").exists()


def test_a_failed_export_removes_the_folders_it_made(run_dir, tmp_path, monkeypatch):
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("glan.export._write", broken)
    with pytest.raises(OSError):
        export(run_dir, "messages", tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []


def test_clean_records_of_older_instructions_never_reach_an_export(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    result = CliRunner().invoke(app, ["clean", str(run), "--benchmarks", "gsm8k"])
    assert result.exit_code == 0, result.output
    lines = (run / "instructions.jsonl").read_bytes().splitlines(keepends=True)
    (run / "instructions.jsonl").write_bytes(b"".join(lines[:6]))  # a re-run changed them
    for command in (["export", str(run)], ["report", str(run)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        assert result.output.strip() == (
            f"error: clean.jsonl was made from an older instructions.jsonl: re-run glan clean {run}"
        )
    assert not (run / "export").exists() and not (run / "report.html").exists()
    assert CliRunner().invoke(app, ["clean", str(run), "--benchmarks", "gsm8k"]).exit_code == 0
    target = export(run, "messages").folder
    assert len((target / "train.jsonl").read_bytes().splitlines()) <= 6


def test_cleaned_records_are_exported_when_present(run_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["clean", str(run_dir), "--benchmarks", "gsm8k"])
    assert result.exit_code == 0, result.output
    target = export(run_dir, "messages", tmp_path / "c").folder
    card = (target / "README.md").read_text()
    assert "Source file: `clean.jsonl`" in card
    assert "decontaminated against gsm8k (1,319 items)" in card
    (run_dir / "clean.jsonl").unlink()


def test_push_to_hub_uploads_the_export_and_its_card(run_dir, tmp_path):
    hub = FakeHub()
    hub.install()
    try:
        result = CliRunner().invoke(
            app,
            [
                "export",
                str(run_dir),
                "--format",
                "parquet",
                "--out",
                str(tmp_path / "p"),
                "--push-to-hub",
                "me/glan-data",
            ],
            env={"HF_TOKEN": "hf_fake_token"},
        )
    finally:
        hub.uninstall()
    assert result.exit_code == 0, result.output
    assert hub.created and hub.created[0]["name"] == "glan-data"
    assert (
        hub.created[0].get("visibility", "private" if hub.created[0].get("private") else "")
        == "private"
    )
    assert set(hub.files) == {"train.parquet", "README.md"}
    assert b"question-answer pairs" in hub.files["README.md"]


def test_unknown_format_is_a_user_error(run_dir):
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "csv"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: unknown format 'csv': choose one of messages, alpaca, sharegpt, parquet, hf"
    )
    assert not (run_dir / "export").exists()


@pytest.mark.parametrize("fmt", ["parquet", "messages", "hf"])
def test_small_shards_load_back_as_one_dataset_in_order(run_dir, tmp_path, fmt, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setattr("glan.export.BATCH_ROWS", 2)  # a file spans batches
    target = export(run_dir, fmt, tmp_path / fmt, shard_bytes=SEVERAL[fmt]).folder
    card = (target / "README.md").read_text()
    listed = [line[6:] for line in card.split("---")[1].splitlines() if line.startswith("    - ")]
    assert len(listed) > 2, "this shard size must give several shards"
    suffix = {"parquet": ".parquet", "messages": ".jsonl", "hf": ".arrow"}[fmt]
    on_disk = sorted(str(p.relative_to(target)) for p in target.rglob(f"*{suffix}"))
    assert listed == on_disk and listed[-1].endswith(f"-of-{len(listed):05d}{suffix}")
    ds = load_dataset(str(target), split="train")  # the card's configs: block names the shards
    assert [r["messages"][0]["content"] for r in ds] == questions(run_dir)
    if fmt == "hf":
        from datasets import load_from_disk

        assert [r["messages"][0]["content"] for r in load_from_disk(str(target / "dataset"))] == (
            questions(run_dir)
        )


def test_a_re_export_leaves_no_stale_shard(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("glan.export.BATCH_ROWS", 2)
    target = export(run_dir, "parquet", tmp_path / "p", shard_bytes=SEVERAL["parquet"]).folder
    assert len(list(target.glob("train-*-of-*.parquet"))) > 2
    export(run_dir, "parquet", target)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "train.parquet"]


def test_parquet_row_groups_are_batches_not_the_whole_file(run_dir, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr("glan.export.BATCH_ROWS", 5)
    target = export(run_dir, "parquet", tmp_path / "p").folder
    meta = pq.ParquetFile(target / "train.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [5, 5, 2]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500MB", 500 * 10**6),
        ("2GB", 2 * 10**9),
        ("1.5KB", 1500),
        ("20 kb", 20_000),
        ("64MiB", 64 << 20),
        ("750KiB", 750 << 10),
        ("4096B", 4096),
    ],
)
def test_shard_sizes_read_like_people_write_them(text, size):
    from glan.post.shards import parse_size

    assert parse_size(text) == size


UNITS = "units: B, KB, MB, GB, TB (1000s), KiB, MiB, GiB, TiB (1024s)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("lots", f"error: --shard-size 'lots' is not a size: write e.g. 500MB ({UNITS})"),
        ("20", f"error: --shard-size 20 has no unit: 20KB? 20MB? ({UNITS})"),
        ("750k", f"error: --shard-size 750k has no unit glan reads: 750KB? 750KiB? ({UNITS})"),
        ("0MB", "error: --shard-size must be more than 0 bytes, got '0MB'"),
    ],
    ids=["not a size", "no unit", "k alone", "zero"],
)
def test_a_shard_size_without_a_unit_is_one_line_and_writes_nothing(run_dir, tmp_path, text, line):
    target = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--out", str(target), "--shard-size", text]
    )
    assert result.exit_code == 2
    assert result.output.strip() == line
    assert not target.exists()


def shard_files(target: Path) -> list[Path]:
    """The export's data files, in order (the card and the hf state files left out)."""
    return sorted(p for p in target.rglob("*") if p.suffix in (".jsonl", ".parquet", ".arrow"))


BOUNDS = [*SEVERAL.items(), ("messages", 5_000), ("parquet", 7_000), ("hf", 8_000)]


@pytest.mark.parametrize("batch_rows", [3, 8192])
@pytest.mark.parametrize(("fmt", "bound"), BOUNDS)
def test_no_file_is_larger_than_the_shard_size(
    run_dir, tmp_path, fmt, bound, batch_rows, monkeypatch
):
    """--shard-size bounds every file's bytes, whether a file spans batches or a batch spans
    files (8,192 records: more than the whole run, which used to land in one file of any size)."""
    from glan.train.data import load_pairs

    monkeypatch.setattr("glan.export.BATCH_ROWS", batch_rows)
    result = export(run_dir, fmt, tmp_path / fmt, shard_bytes=bound)
    files = shard_files(result.folder)
    sizes = [f.stat().st_size for f in files]
    assert len(files) > 1 and max(sizes) <= bound, sizes
    assert result.oversized == [] and result.records == 12
    assert result.files == [str(f.relative_to(result.folder)) for f in files]
    pairs = load_pairs(result.folder)
    assert [p["prompt"][-1]["content"] for p in pairs] == questions(run_dir)


def test_a_jsonl_file_closes_only_when_the_next_record_would_not_fit(run_dir, tmp_path):
    result = export(run_dir, "messages", tmp_path / "m", shard_bytes=2_000)
    files = shard_files(result.folder)
    assert len(files) > 2
    for this, following in itertools.pairwise(files):
        first_of_next = following.read_bytes().splitlines(keepends=True)[0]
        assert this.stat().st_size + len(first_of_next) > 2_000


@pytest.fixture
def run_with_a_long_record(run_dir, tmp_path) -> Path:
    """The run, its 6th answer grown to about 30 kB."""
    run = tmp_path / "long"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("clean*", "export"))
    lines = (run / "instructions.jsonl").read_bytes().splitlines()
    record = orjson.loads(lines[5])
    words = (hashlib.sha256(str(i).encode()).hexdigest()[:8] for i in range(4_000))
    record["messages"][1]["content"] = " ".join(words)  # no compression shrinks it
    lines[5] = orjson.dumps(record)
    (run / "instructions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return run


@pytest.mark.parametrize(("fmt", "bound"), [("messages", 5_000), ("parquet", 7_000), ("hf", 7_000)])
def test_a_record_larger_than_the_shard_size_gets_a_file_of_its_own(
    run_with_a_long_record, tmp_path, fmt, bound
):
    result = export(run_with_a_long_record, fmt, tmp_path / fmt, shard_bytes=bound)
    files = shard_files(result.folder)
    assert len(result.oversized) == 1
    alone = result.folder / result.oversized[0]
    assert alone.stat().st_size > 30_000
    assert all(f.stat().st_size <= bound for f in files if f != alone)
    from glan.train.data import load_pairs

    pairs = load_pairs(result.folder)
    assert [p["prompt"][-1]["content"] for p in pairs] == questions(run_with_a_long_record)
    assert len(pairs[5]["completion"][-1]["content"]) > 30_000


def test_export_says_how_many_records_and_files_it_wrote(run_dir, tmp_path):
    target = tmp_path / "m"
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--out", str(target), "--shard-size", "3KB", "-q"]
    )
    assert result.exit_code == 0, result.output
    n = len(shard_files(target))
    assert result.output.strip() == (
        f"exported 12 records as messages to {target}: {n} files of at most 3KB"
    )
    one = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(target), "-q"])
    assert one.output.strip() == f"exported 12 records as messages to {target}: 1 file"


def test_export_names_the_record_too_large_for_the_shard_size(run_with_a_long_record, tmp_path):
    target = tmp_path / "m"
    result = CliRunner().invoke(
        app,
        ["export", str(run_with_a_long_record), "--out", str(target), "--shard-size", "5KB", "-q"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    n = len(shard_files(target))
    assert lines[0] == f"exported 12 records as messages to {target}: {n} files of at most 5KB"
    alone = next(f for f in shard_files(target) if f.stat().st_size > 5_000)
    assert lines[1] == (
        f"note: 1 record is larger than 5KB on its own: it has a file of its own, over the "
        f"size ({alone.name}, {alone.stat().st_size:,} bytes)"
    )


def test_push_to_hub_resumes_sending_only_what_the_repo_lacks(run_dir, tmp_path, monkeypatch):
    from glan.errors import UserError
    from glan.export import push_to_hub

    monkeypatch.setattr("glan.export.BATCH_ROWS", 2)
    target = export(run_dir, "parquet", tmp_path / "p", shard_bytes=SEVERAL["parquet"]).folder
    shards = sorted(p.name for p in target.glob("train-*.parquet"))
    assert len(shards) == 6
    hub = FakeHub(fail_after_commits=1)
    hub.install()
    try:
        with pytest.raises(UserError, match="run it again: files already there are not sent"):
            push_to_hub(target, "me/glan-data", token="hf_fake")
        assert hub.commits == [shards[:4]]  # the first commit arrived, the second failed
        hub.fail_after_commits = None
        push_to_hub(target, "me/glan-data", token="hf_fake")
        assert hub.commits[1:] == [shards[4:], ["README.md"]]
        push_to_hub(target, "me/glan-data", token="hf_fake")
        assert len(hub.commits) == 3  # all there: nothing sent
        assert all(hub.files[name] == (target / name).read_bytes() for name in shards)
        export(run_dir, "parquet", target)  # one file now: the old shards must go from the repo
        push_to_hub(target, "me/glan-data", token="hf_fake")
    finally:
        hub.uninstall()
    assert sorted(hub.commits[-2]) == ["train.parquet"]
    assert sorted(hub.commits[-1]) == sorted(["README.md", *(f"-{name}" for name in shards)])
    assert set(hub.files) == {"train.parquet", "README.md"}


@pytest.mark.parametrize("fmt", ["messages", "parquet", "hf"])
def test_glan_train_reads_a_sharded_export_in_order(run_dir, tmp_path, fmt, monkeypatch):
    """An export past --shard-size is several files (or an hf folder): glan train reads them
    all, in order, as it reads a single train.jsonl."""
    from glan.train.data import load_pairs

    monkeypatch.setattr("glan.export.BATCH_ROWS", 2)
    target = export(run_dir, fmt, tmp_path / fmt, shard_bytes=SEVERAL[fmt]).folder
    pairs = load_pairs(target)
    assert [p["prompt"][-1]["content"] for p in pairs] == questions(run_dir)
