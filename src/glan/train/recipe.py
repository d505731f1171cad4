"""The paper's recipe and the arithmetic that turns it into trainer settings."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field


class Recipe(BaseModel):
    """GLAN's defaults: loss on responses only, 3 epochs, lr 3e-6, 512 pairs per optimiser step,
    cosine schedule with 1,000 warm-up steps decaying to 0. Every field can be overridden."""

    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(3e-6, gt=0)
    pairs_per_step: int = Field(512, ge=1)
    per_device_batch: int = Field(4, ge=1)
    warmup_steps: int = Field(1000, ge=0)
    max_seq_len: int = Field(2048, ge=16)
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: epochs)")
    save_steps: int = Field(200, ge=1)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 42


class StepPlan(BaseModel):
    """What the recipe means for this data on these devices."""

    devices: int
    grad_accum: int
    pairs_per_step: int  # the effective batch actually reached
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    notes: list[str] = []


WARMUP_SHARE = 10  # at most a tenth of the run warms up, so that the schedule still decays


def plan_steps(recipe: Recipe, n_pairs: int, devices: int) -> StepPlan:
    """Gradient accumulation from the per-device batch and the device count. An epoch ends with
    a smaller step that takes the remainder (as the Trainer does: ceil(ceil(n / batch) / accum)
    equals ceil(n / (batch x accum))). Warm-up is the recipe's, capped at a tenth of the run, a
    cap that grows by one step every ten steps (no jump at any run length)."""
    notes: list[str] = []
    per_step = recipe.per_device_batch * devices
    grad_accum = max(1, math.ceil(recipe.pairs_per_step / per_step))
    effective = grad_accum * per_step
    if effective != recipe.pairs_per_step:
        notes.append(
            f"{recipe.pairs_per_step} pairs per step is not a multiple of {per_step} "
            f"({recipe.per_device_batch} per device x {devices} devices): using {effective}"
        )
    if n_pairs < effective:
        grad_accum = max(1, math.ceil(n_pairs / per_step))
        effective = grad_accum * per_step
        notes.append(f"only {n_pairs} pairs: one optimiser step takes {effective} of them")
    steps_per_epoch = math.ceil(n_pairs / effective)
    total = math.ceil(steps_per_epoch * recipe.epochs)
    if recipe.max_steps > 0:
        total = min(total, recipe.max_steps)
    warmup = min(recipe.warmup_steps, total // WARMUP_SHARE)
    if warmup < recipe.warmup_steps:
        notes.append(
            f"{total} optimiser steps in all: warming up over {warmup} steps (a tenth of the "
            f"run) instead of {recipe.warmup_steps}, so that the learning rate peaks and decays"
        )
    return StepPlan(
        devices=devices,
        grad_accum=grad_accum,
        pairs_per_step=effective,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=warmup,
        notes=notes,
    )
