"""Export formats read back by the libraries that consume them; the card; push to a fake hub."""

from __future__ import annotations

import hashlib
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


def questions(run_dir: Path) -> list[str]:
    return [
        orjson.loads(line)["messages"][0]["content"]
        for line in (run_dir / "instructions.jsonl").read_bytes().splitlines()
    ]


@pytest.mark.parametrize("fmt", ["messages", "alpaca", "sharegpt"])
def test_jsonl_formats_load_with_datasets(run_dir, fmt, tmp_path):
    from datasets import load_dataset

    target = export(run_dir, fmt, tmp_path / fmt)
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

    target = export(run_dir, "parquet", tmp_path / "pq")
    frame = pd.read_parquet(target / "train.parquet")
    assert len(frame) == 12 and list(frame.columns) == ["id", "messages", "meta"]
    table = pq.read_table(target / "train.parquet")
    assert table.column("messages")[0].as_py()[0]["content"] == questions(run_dir)[0]


def test_hf_dataset_loads_from_disk(run_dir, tmp_path):
    from datasets import load_from_disk

    target = export(run_dir, "hf", tmp_path / "hf")
    ds = load_from_disk(str(target / "dataset"))
    assert len(ds) == 12 and ds[0]["messages"][0]["content"] == questions(run_dir)[0]


def test_card_describes_counts_models_and_cleaning(run_dir, tmp_path):
    target = export(run_dir, "messages", tmp_path / "m")
    card = (target / "README.md").read_text()
    assert "12 question-answer pairs" in card and "fake-model" in card
    assert "| answers |" in card and "Not cleaned" in card and "License" in card


def test_card_names_the_version_the_records_and_the_cumulative_cost(run_dir, tmp_path):
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    target = export(run_dir, "messages", tmp_path / "m")
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
    target = export(run, "messages")
    assert len((target / "train.jsonl").read_bytes().splitlines()) <= 6


def test_cleaned_records_are_exported_when_present(run_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["clean", str(run_dir), "--benchmarks", "gsm8k"])
    assert result.exit_code == 0, result.output
    target = export(run_dir, "messages", tmp_path / "c")
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
    assert result.exit_code != 0
