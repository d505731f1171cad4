"""Wiring the recipe into TRL's SFTTrainer: one process, or many under `accelerate launch`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glan.errors import UserError
from glan.train import artifacts
from glan.train.data import Pair, fingerprint, load_pairs
from glan.train.models import require, resolve_model
from glan.train.recipe import Recipe, StepPlan, plan_steps


@dataclass
class TrainResult:
    out_dir: Path
    plan: StepPlan
    resumed_from: str | None
    losses: list[dict[str, float]]
    data: dict[str, Any]


def device_count() -> int:
    """Processes taking part: accelerate launch sets WORLD_SIZE; a plain run is one process."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def sft_config(recipe: Recipe, plan: StepPlan, out_dir: Path) -> Any:
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=recipe.epochs,
        max_steps=plan.total_steps,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine",  # decays to 0 at the last step, as in the paper
        warmup_steps=plan.warmup_steps,
        per_device_train_batch_size=recipe.per_device_batch,
        gradient_accumulation_steps=plan.grad_accum,
        max_length=recipe.max_seq_len,
        completion_only_loss=True,  # the instruction is masked; loss on the response only
        gradient_checkpointing=False,  # TRL turns it on by default
        activation_checkpointing=on_gpu,  # saves GPU memory; only slows a CPU run
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        logging_steps=1,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=2,
        report_to="none",
        seed=recipe.seed,
        dataloader_num_workers=0,
    )


def build_trainer(
    pairs: list[Pair], model_name: str, recipe: Recipe, out_dir: Path, callbacks: list | None = None
) -> tuple[Any, StepPlan]:
    """The SFTTrainer, its data tokenised, ready to train (tests inspect its collator)."""
    require("train")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    plan = plan_steps(recipe, len(pairs), device_count())
    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise UserError(f"{model_name} has no chat template; glan trains chat-formatted pairs")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    peft_config = None
    if recipe.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model,
        args=sft_config(recipe, plan, out_dir),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    return trainer, plan


def last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def train(
    source: Path,
    model_name: str,
    out_dir: Path,
    recipe: Recipe,
    resume: bool = False,
    callbacks: list | None = None,
    on_plan: Callable[[StepPlan], None] | None = None,
) -> TrainResult:
    """Tune `model_name` on the pairs in `source`; the final model and tokenizer go to out_dir."""
    require("train")
    pairs = load_pairs(source)
    data = {"source": str(source), **fingerprint(pairs)}
    checkpoint = last_checkpoint(out_dir)
    if checkpoint and not resume:
        raise UserError(f"{out_dir} holds checkpoints: pass --resume to continue, or another --out")
    if resume:
        artifacts.check_same_data(out_dir, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer, plan = build_trainer(pairs, model_name, recipe, out_dir, callbacks)
    if on_plan is not None:
        on_plan(plan)  # before the first step, so notes about the recipe are seen early
    config = {"base_model": model_name, "recipe": recipe.model_dump(), "plan": plan.model_dump()}
    if trainer.is_world_process_zero():
        artifacts.write_config(out_dir, {**config, "data": data})
    trainer.train(resume_from_checkpoint=checkpoint if resume else None)
    losses = artifacts.loss_points(trainer.state.log_history)
    _save_final(trainer, out_dir, recipe.lora)
    if trainer.is_world_process_zero():
        artifacts.write_loss_curve(out_dir, losses)
    return TrainResult(out_dir, plan, checkpoint if resume else None, losses, data)


def _save_final(trainer: Any, out_dir: Path, lora: bool) -> None:
    """A plain model folder that `glan eval` and transformers load directly (LoRA merged in;
    the adapter is kept in out_dir/adapter)."""
    if not lora:
        trainer.save_model(str(out_dir))  # saves on the main process only
    elif trainer.is_world_process_zero():  # one writer: every rank holds the same adapter
        trainer.model.save_pretrained(str(out_dir / "adapter"))
        trainer.model.merge_and_unload().save_pretrained(str(out_dir))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(out_dir))
