"""`glan train`: the recipe's arithmetic, response-only loss, checkpoints that reload and resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from glan.errors import UserError
from glan.testing.deps import need
from glan.train.data import fingerprint, load_pairs
from glan.train.recipe import Recipe, plan_steps


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_paper_recipe_is_the_default() -> None:
    recipe = Recipe()
    assert (recipe.epochs, recipe.learning_rate, recipe.pairs_per_step) == (3, 3e-6, 512)
    assert recipe.warmup_steps == 1000 and not recipe.lora


def test_accumulation_reaches_512_pairs_per_step_across_devices() -> None:
    plan = plan_steps(Recipe(per_device_batch=4), n_pairs=10_000_000, devices=8)  # paper-sized
    assert plan.grad_accum == 16 and plan.pairs_per_step == 512
    assert plan.steps_per_epoch == 19_532  # 10M / 512 = 19,531.25: the last step takes the rest
    assert plan.warmup_steps == 1000 and not plan.notes


def test_every_pair_is_seen_each_epoch_the_last_step_taking_the_remainder() -> None:
    plan = plan_steps(Recipe(), n_pairs=1_000, devices=1)  # 512 + 488 pairs an epoch
    assert (plan.steps_per_epoch, plan.total_steps) == (2, 6)


def test_short_runs_scale_the_warmup_down_and_say_so() -> None:
    plan = plan_steps(Recipe(), n_pairs=51_200, devices=1)  # 100 steps/epoch, 300 in all
    assert plan.total_steps == 300 and plan.warmup_steps == 30
    assert any("warming up over 30 steps" in note for note in plan.notes)


def test_the_warmup_grows_smoothly_with_the_length_of_the_run() -> None:
    def warmup(total_steps: int) -> int:
        return plan_steps(Recipe(max_steps=total_steps), 10_000_000, devices=1).warmup_steps

    assert (warmup(1_000), warmup(1_001)) == (100, 100)
    lengths = range(1, 12_000, 7)
    warmups = [warmup(n) for n in lengths]
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(warmups))
    assert all(w <= n // 10 for w, n in zip(warmups, lengths, strict=True))
    assert warmups[-1] == 1000


def test_pairs_come_alike_from_a_run_and_its_messages_export(pairs_run: Path, tmp_path) -> None:
    from glan.export import export

    exported = export(pairs_run, "messages", tmp_path / "export").folder
    from_run, from_export = load_pairs(pairs_run), load_pairs(exported / "train.jsonl")
    assert fingerprint(from_run) == fingerprint(from_export)
    assert from_run[0]["prompt"][0]["role"] == "user"
    assert from_run[0]["completion"][0]["role"] == "assistant"


def test_a_run_without_pairs_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "instructions.jsonl").write_text('{"id": "x", "messages": []}\n')
    with pytest.raises(UserError, match="no instruction-response pairs"):
        load_pairs(tmp_path)


@pytest.mark.slow
def test_loss_is_masked_on_every_instruction_token(tiny_model: Path, pairs_run: Path, tmp_path):
    from glan.train.trainer import build_trainer

    pairs = load_pairs(pairs_run)[:4]
    trainer, _ = build_trainer(pairs, str(tiny_model), Recipe(per_device_batch=4), tmp_path)
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for row, pair in enumerate(pairs):
        # The chat template's own rendering (SmolLM2's adds a system turn) tells the split.
        prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*pair["prompt"], *pair["completion"]])
        prompt, full = _ids(prompt), _ids(full)
        assert full[: len(prompt)] == prompt
        ids = batch["input_ids"][row].tolist()[: len(full)]
        labels = batch["labels"][row].tolist()[: len(full)]
        assert ids == full
        assert all(label == -100 for label in labels[: len(prompt)])
        assert labels[len(prompt) :] == ids[len(prompt) :]
        response = tokenizer.decode(ids[len(prompt) :])
        assert response.startswith(pair["completion"][0]["content"])
        assert "<|im_end|>" in response  # the end of the turn is learnt too


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_checkpoint_reloads_and_generates(
    tuned, tiny_model: Path, pairs_run: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glan.evaluate.leakage import answer_loss

    losses = [p["loss"] for p in tuned.losses]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    out = tuned.out_dir
    config = json.loads((out / "train_config.json").read_text())
    assert config["data"]["pairs"] == 64 and len(config["data"]["sha256"]) == 64
    assert config["recipe"]["learning_rate"] == 3e-3
    assert (out / "loss_curve.html").stat().st_size > 10_000
    assert len(json.loads((out / "loss_curve.json").read_text())["points"]) == 8
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    # The folder holds the tuned weights, not the base's: the training answers got far likelier.
    pairs = load_pairs(pairs_run)[:8]
    tuned_loss, base_loss = (
        sum(answer_loss(m, tokenizer, p["prompt"], p["completion"][0]["content"]) for p in pairs)
        / len(pairs)
        for m in (model, base)
    )
    assert tuned_loss < base_loss - 0.5
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True
    )
    ids = _ids(prompt)
    import torch

    generated = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
    assert generated.shape[1] > len(ids)


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint_after_a_kill(
    tiny_model: Path, pairs_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ckpt"
    args = ["--base-model", str(tiny_model), "--out", str(out), "--epochs", "1", "--lr", "3e-3"]
    args += ["--batch-pairs", "8", "--per-device-batch", "8", "--max-seq-len", "128"]
    args += ["--save-steps", "2", "--max-steps", "6"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glan", "train", str(pairs_run), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "model.safetensors").exists()  # killed before the end

    from glan.train.trainer import train

    recipe = Recipe(**{"epochs": 1, "learning_rate": 3e-3, "pairs_per_step": 8})
    recipe = recipe.model_copy(update={"per_device_batch": 8, "max_seq_len": 128})
    recipe = recipe.model_copy(update={"save_steps": 2, "max_steps": 6})
    with pytest.raises(UserError, match="--resume"):
        train(pairs_run, str(tiny_model), out, recipe)
    result = train(pairs_run, str(tiny_model), out, recipe, resume=True)
    assert Path(result.resumed_from).name.startswith("checkpoint-")
    resumed_at = int(Path(result.resumed_from).name.split("-")[1])
    assert resumed_at >= 2
    steps = [p["step"] for p in result.losses]
    assert steps[-1] == 6 and (out / "model.safetensors").is_file()


def test_a_missing_test_dependency_fails_in_ci_and_skips_elsewhere(monkeypatch) -> None:
    from glan.testing.deps import need

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is missing in CI"):
        need("glan_no_such_module", "a test dependency")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        need("glan_no_such_module", "a test dependency")


def test_a_weight_that_does_not_match_is_an_error_naming_it() -> None:
    need("transformers", "glan[train]")
    from transformers import LlamaConfig, LlamaForCausalLM

    from glan.train.models import load_strict

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=True,
    )
    state = LlamaForCausalLM(config).state_dict()
    state.pop("lm_head.weight", None)  # tied to the embedding: not a mismatch
    load_strict(LlamaForCausalLM(config), dict(state), "tied.gguf")
    state["model.layers.7.extra.weight"] = state.pop("model.layers.0.mlp.up_proj.weight")
    with pytest.raises(UserError, match=r"missing model\.layers\.0\.mlp\.up_proj\.weight") as err:
        load_strict(LlamaForCausalLM(config), state, "broken.gguf")
    assert "unexpected model.layers.7.extra.weight" in str(err.value)


def test_concurrent_runs_convert_a_gguf_once_and_share_it(monkeypatch, tmp_path: Path) -> None:
    need("filelock", "glan[train]")
    from glan.train import models

    monkeypatch.setenv("GLAN_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    conversions: list[Path] = []
    first_in, second_in, release = threading.Event(), threading.Event(), threading.Event()

    def fake_convert(source: Path, target: Path) -> Path:
        conversions.append(target)
        (second_in if first_in.is_set() else first_in).set()
        release.wait()
        target.mkdir()
        (target / "config.json").write_text("{}")
        return target

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    results: list[str] = []
    ranks = [threading.Thread(target=lambda: results.append(models.resolve_model(str(gguf))))]
    ranks[0].start()
    first_in.wait()
    ranks.append(threading.Thread(target=lambda: results.append(models.resolve_model(str(gguf)))))
    ranks[1].start()
    # The second rank must wait for the first, never convert alongside it: give it the chance to.
    converted_alongside = second_in.wait(timeout=2)
    release.set()
    for rank in ranks:
        rank.join()
    assert not converted_alongside and len(conversions) == 1
    assert results == [str(conversions[0])] * 2


@pytest.mark.slow
def test_the_packaged_gguf_converts_to_the_logits_llama_cpp_computes(monkeypatch, tmp_path) -> None:
    need("transformers", "glan[train]")
    llama_cpp = need("llama_cpp", "llama-cpp-python (glan[local])")
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glan.train.models import SMOLLM2, packaged_smollm2, resolve_model

    monkeypatch.setenv("GLAN_CACHE", str(tmp_path))
    path = resolve_model(SMOLLM2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The capital of France is Paris. The capital of Italy is")["input_ids"]
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(path).eval()(torch.tensor([ids])).logits[0]
    llm = llama_cpp.Llama(str(packaged_smollm2()), logits_all=True, n_ctx=64, verbose=False)
    try:
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    ours = ours.float().numpy()
    # Not equal: llama.cpp multiplies the Q4_1 weights by activations it quantises to 8 bits
    # (Q8_1), where the converted model uses the same dequantised weights with fp32
    # activations. Measured: mean |diff| 0.27 and max 1.36 on logits spread with sd 5.9,
    # correlation >= 0.998 at every position, same top token everywhere. A weight left random
    # or laid out wrongly (transposed, rope order) puts the correlation near 0.
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert all(np.corrcoef(a, b)[0, 1] > 0.99 for a, b in zip(ours, theirs, strict=True))
    assert np.abs(ours - theirs).mean() < 0.5


def test_the_cli_loads_without_torch() -> None:
    code = (
        "import sys, glan.cli; sys.exit(bool({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_missing_torch_is_one_line_naming_the_exact_install(monkeypatch) -> None:
    import importlib.util

    from glan.train import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "torch" else real(n))
    with pytest.raises(UserError, match=r"pip install torch==2\.13\.0"):
        models.require("train")
