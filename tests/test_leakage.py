"""The leakage test's scoring and evidence: batched losses equal one-by-one losses, a user's
training split (--leakage-data) is read, checked and named, and every gap carries a bootstrap
interval drawn from a recorded seed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from glan.evaluate.leakage import WARN_SHIFT, LeakageRow
from glan.evaluate.leakage_interval import GapIntervals


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _items(n: int, seed: int) -> list[tuple[list[dict[str, str]], str]]:
    """Prompts and answers of very different lengths, so that batches are padded."""
    rng = random.Random(seed)
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "seven",
        "orbit",
        "lantern",
        "copper",
        "meadow",
        "violet",
    ]
    return [
        (
            [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(1, 40)))}],
            " ".join(rng.choices(words, k=rng.randint(1, 25))),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_batched_losses_equal_one_by_one_losses(tiny_model: Path, template: str) -> None:
    from glan.evaluate.answer_loss import answer_loss, answer_losses, load

    model, tokenizer = load(str(tiny_model))
    if template == "plain":
        tokenizer.chat_template = None  # the "Question: ...\nAnswer: ..." form
    items = _items(11, seed=3)
    alone = [answer_loss(model, tokenizer, prompt, answer) for prompt, answer in items]
    for batch_size in (1, 4, 16):
        batched = answer_losses(model, tokenizer, items, batch_size)
        assert batched == pytest.approx(alone, abs=1e-4), batch_size
    assert len(set(np.round(alone, 3))) > 5  # the items differ: a mix-up of order would show


def _gsm8k_train(path: Path, n: int) -> Path:
    rows = [
        {
            "question": f"Tom has {i} apples and buys {i + 2}. How many?",
            "answer": f"#### {2 * i + 2}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_leakage_data_stands_in_for_the_training_split_and_the_table_says_so(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glan.cli import app
    from glan.cli.app import out

    monkeypatch.setattr(out, "width", 400)  # the table's cells unwrapped

    train = _gsm8k_train(tmp_path / "gsm8k_train.jsonl", 6)
    args = ["eval", "--leakage", "--model", f"base={tiny_model}", "--model", f"same={tiny_model}"]
    args += ["--benchmarks", "gsm8k", "--leakage-items", "5", "--no-fetch", "--batch-size", "3"]
    args += ["--leakage-data", f"gsm8k={train}", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"train (user file {train})" in result.output
    payload = json.loads((tmp_path / "out" / "leakage" / "leakage.json").read_text())
    assert payload["bootstrap"]["seed"] == 30 and payload["bootstrap"]["iters"] == 10_000
    assert payload["scoring"] == {"device": "cpu", "dtype": "torch.float32", "batch_size": 3}
    base, same = payload["rows"]
    for row in (base, same):
        assert row["status"] == "run" and row["items"] == 5
        assert row["train_source"] == f"user file {train}"
        assert row["gap_low"] < row["gap"] < row["gap_high"]
    # The same weights twice: the same losses, so a shift of exactly nothing, an interval of 0.
    assert same["shift"] == same["shift_low"] == same["shift_high"] == 0
    assert same["reading"] == "near"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read it"),
        ('{"question": "q", "answer": "a"}\nnot json\n', "line 2: not JSON"),
        ('{"question": "q"}\n', "line 1: no 'answer' field"),
    ],
    ids=["no file", "not json", "no answer"],
)
def test_a_wrong_leakage_data_file_is_one_line_and_exit_2(
    tiny_model: Path, tmp_path: Path, content: str | None, why: str
) -> None:
    from glan.testing.cli import assert_one_clear_line, glan

    path = tmp_path / "train.jsonl"
    if content is not None:
        path.write_text(content)
    args = ["eval", "--leakage", "--model", str(tiny_model), "--benchmarks", "gsm8k"]
    proc = glan(*args, "--no-fetch", "--leakage-data", f"gsm8k={path}")
    assert_one_clear_line(proc, f"--leakage-data gsm8k={path}", why, '{"question": ...')


def test_a_multiple_choice_training_file_is_checked_against_its_choices(tmp_path: Path) -> None:
    from glan.errors import UserError
    from glan.evaluate.splits import read_user_split

    path = tmp_path / "arc.jsonl"
    good = {"question": "Sky?", "choices": ["blue", "green"], "label": 0}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": 2}) + "\n")
    with pytest.raises(UserError, match="line 2: 'label' is not the index"):
        read_user_split("arc_challenge", path)
    path.write_text(json.dumps(good) + "\n")
    assert read_user_split("arc_challenge", path) == [good]
    path.write_text("\n")
    with pytest.raises(UserError, match="no items"):
        read_user_split("arc_challenge", path)
    with pytest.raises(UserError, match="no reference answer"):
        read_user_split("ifeval", path)


def _losses(seed: int) -> tuple[list[list[float]], list[list[float]]]:
    rng = np.random.default_rng(seed)
    test, train = rng.gamma(2.0, 1.0, 40), rng.gamma(2.0, 0.9, 40)
    # a second model: the first's losses plus a small shift and its own noise (paired)
    return [test, test + 0.05 + rng.normal(0, 0.05, 40)], [train, train + rng.normal(0, 0.05, 40)]


def test_gap_intervals_cover_the_gap_and_repeat_with_the_seed() -> None:
    test, train = _losses(0)
    first = GapIntervals("gsm8k", test, train)
    for model in (0, 1):
        gap = np.mean(test[model]) - np.mean(train[model])
        low, high = first.gap(model)
        assert low < gap < high
        assert first.gap(model) == GapIntervals("gsm8k", test, train).gap(model)
    assert first.gap(0) != GapIntervals("gsm8k", test, train, seed=31).gap(0)
    # Paired: the shift's interval is far narrower than either model's gap interval.
    shift_low, shift_high = first.shift(1, 0)
    assert shift_low < np.mean(test[1] - test[0]) - np.mean(train[1] - train[0]) < shift_high
    assert shift_high - shift_low < (first.gap(0)[1] - first.gap(0)[0]) / 3


def _row(shift: float, low: float, high: float) -> LeakageRow:
    return LeakageRow(
        benchmark="b", model="m", status="run", shift=shift, shift_low=low, shift_high=high
    )


def test_a_row_is_flagged_only_when_its_whole_interval_is_past_the_margin() -> None:
    from glan.evaluate.leakage import _flag

    rows = [
        _row(0.4, WARN_SHIFT + 0.01, 0.8),
        _row(-0.4, -0.8, -WARN_SHIFT - 0.01),
        _row(0.0, -0.05, 0.05),
        _row(0.3, 0.05, 0.6),  # the point is past the margin, the interval is not
    ]
    _flag(rows)
    assert [r.reading for r in rows] == ["flagged", "flagged", "near", "can't tell"]
    assert "in-domain" in rows[0].warning and "look learnt" in rows[1].warning
    assert not rows[2].warning and not rows[3].warning
