"""The HTML report: self-contained, and its plots render in a real headless browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glan.api import generate
from glan.cli import app
from glan.config import GenerateConfig
from glan.testing.fake_server import FakeServer


@pytest.fixture(scope="module")
def cleaned_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    with FakeServer() as server:
        cfg = GenerateConfig.model_validate(
            {
                "llm": {"backend": "openai", "base_url": server.base_url, "model": "fake-model"},
                "prices": {"fake-model": {"input": 2.5, "output": 10.0}},
            }
        )
        generate(out, 60, cfg)
    result = CliRunner().invoke(app, ["clean", str(out), "--benchmarks", "gsm8k"])
    assert result.exit_code == 0, result.output
    return out


def test_report_is_one_self_contained_file(cleaned_run):
    result = CliRunner().invoke(app, ["report", str(cleaned_run)])
    assert result.exit_code == 0, result.output
    page = (cleaned_run / "report.html").read_text()
    assert "<script src=" not in page  # no CDN, no external script
    assert page.count('class="card"') == 6


def test_report_names_the_records_it_was_made_from(cleaned_run):
    import hashlib

    assert CliRunner().invoke(app, ["report", str(cleaned_run)]).exit_code == 0
    sha = hashlib.sha256((cleaned_run / "instructions.jsonl").read_bytes()).hexdigest()
    assert f"instructions.jsonl sha256 {sha}" in (cleaned_run / "report.html").read_text()


@pytest.mark.slow
def test_report_plots_render_offline_in_headless_chromium(cleaned_run, offline_page, artifacts):
    report = cleaned_run / "report.html"
    CliRunner().invoke(app, ["report", str(cleaned_run)])
    page, outside, errors = offline_page.page, offline_page.outside, offline_page.errors
    page.goto(report.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6")
    plots = page.eval_on_selector_all(".js-plotly-plot", "els => els.length")
    sunburst_slices = page.eval_on_selector_all(".sunburstlayer path", "els => els.length")
    bars = page.eval_on_selector_all(".bars path", "els => els.length")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    page.close()
    assert plots == 6 and sunburst_slices > 10 and bars > 5
    assert not errors, errors
    assert not outside, outside  # works offline: nothing fetched from anywhere


def test_length_histograms_keep_one_count_per_length_not_per_record(tmp_path):
    import numpy as np
    import orjson

    from glan.report import RunStats, length_histograms

    run = tmp_path / "run"
    run.mkdir()
    lengths = [3, 5, 5, 9, 9, 9, 40] * 300
    records = [
        {
            "id": str(i),
            "messages": [
                {"role": "user", "content": " ".join(["w"] * n)},
                {"role": "assistant", "content": " ".join(["a"] * (2 * n))},
            ],
            "meta": {"field": "f", "subfield": "s", "discipline": "d"},
        }
        for i, n in enumerate(lengths)
    ]
    (run / "instructions.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    stats = RunStats(run)
    assert stats.question_words == {3: 300, 5: 600, 9: 900, 40: 300}  # 4 entries, not 2,100
    questions = length_histograms(stats).data[0]
    counts, edges = np.histogram(lengths, bins=4)  # what a list of every length gives
    assert list(questions.y) == counts.tolist()
    assert list(questions.x) == ((edges[:-1] + edges[1:]) / 2).tolist()
