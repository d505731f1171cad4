"""Mean per-token loss on an answer given its prompt, for many items at once: what the leakage
test scores. The model runs on the GPU when there is one (bf16 where the card supports it, else
fp16), else on the CPU in fp32; items go through in batches of similar length, right-padded,
with the loss taken on the answer tokens only and in fp32 whatever the model's dtype, so a batch
gives each item the number it would get alone (tests/test_leakage.py checks this on the CPU).
A batch holds fewer rows than asked where its logits (rows x width x vocabulary) would pass
LOGITS_BYTES, which lm-eval's batches in glan share (glan.evaluate.bounded_lm).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
from collections.abc import Sequence
from typing import Any

from glan.post.progress import Step
from glan.train.models import resolve_model

MAX_TOKENS = 2048
BATCH_SIZE = 8
# One batch's fp32 logits; a forward pass and lm-eval's log-softmax each briefly hold two
# copies. At 512 MiB a 135M model's evaluation peaks under 3 GB (BENCHMARKS.md).
LOGITS_BYTES = 1 << 29
FP32 = 4

Messages = list[dict[str, str]]
Item = tuple[Messages, str]  # the prompt's turns, the answer scored after them


def device_and_dtype() -> tuple[str, Any]:
    """("cuda", bf16 where supported else fp16) when torch sees a GPU, else ("cpu", fp32)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def rows_within(tokens: int, vocab: int, batch_size: int) -> int:
    """How many rows `tokens` wide one batch may take: `batch_size`, fewer where their fp32
    logits would pass LOGITS_BYTES; at least one."""
    per_row = max(1, tokens) * max(1, vocab) * FP32
    return max(1, min(batch_size, LOGITS_BYTES // per_row))


def vocab_size(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(getattr(model.config, "vocab_size", 0) or 0)


def free_memory() -> None:
    """What a model dropped by its last reference left: objects in reference cycles (collected
    now rather than whenever Python next runs its collector), the C heap's free pages (glibc
    keeps them otherwise) and, on a GPU, torch's cached blocks; called after each model, before
    the next loads."""
    gc.collect()
    _trim_heap()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _trim_heap() -> None:
    """glibc's malloc_trim(0): free heap pages go back to the system (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load(name: str) -> tuple[Any, Any]:
    """The model (on device_and_dtype()'s device and dtype, in eval mode) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    device, dtype = device_and_dtype()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def texts(tokenizer: Any, prompt: Messages, answer: str) -> tuple[str, str]:
    """(the prompt alone, prompt and answer): in the model's chat template when it has one, else
    as plain "Question: ...\\nAnswer: ..." text."""
    if tokenizer.chat_template:
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        return head, full
    head = "Question: " + "\n".join(m["content"] for m in prompt) + "\nAnswer:"
    return head, f"{head} {answer}"


def encode(tokenizer: Any, prompt: Messages, answer: str) -> tuple[list[int], int]:
    """The item's token ids (cut at MAX_TOKENS) and how many of them are the prompt's."""
    head, full = texts(tokenizer, prompt, answer)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
    return ids, len(head_ids)


def answer_loss(model: Any, tokenizer: Any, prompt: Messages, answer: str) -> float:
    """One item alone, through the model's own loss: the plain definition, which the batched
    answer_losses is checked against."""
    import torch

    ids, head = encode(tokenizer, prompt, answer)
    labels = torch.tensor([ids])
    labels[:, :head] = -100
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]).to(model.device), labels=labels.to(model.device))
    return float(out.loss)


def answer_losses(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    batch_size: int = BATCH_SIZE,
    step: Step | None = None,
) -> list[float]:
    """Each item's mean loss on its answer tokens (nan for an item whose answer was cut off
    entirely), in the order given. Items are batched longest first so that a batch holds
    similar lengths and little padding; each batch scored counts its items into `step`."""
    encoded = [encode(tokenizer, prompt, answer) for prompt, answer in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    losses = [math.nan] * len(encoded)
    vocab, start = vocab_size(model), 0
    while start < len(order):
        rows = rows_within(len(encoded[order[start]][0]), vocab, max(1, batch_size))
        chunk, start = order[start : start + rows], start + rows
        for i, loss in zip(chunk, _batch(model, [encoded[i] for i in chunk], pad), strict=True):
            losses[i] = loss
        if step is not None:
            step.done += len(chunk)
    return losses


def _batch(model: Any, encoded: list[tuple[list[int], int]], pad: int) -> list[float]:
    """One forward pass over right-padded items: padding is masked out of attention and loss
    (right padding keeps every real token's positions as they are alone)."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, head) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, head : len(ids)] = input_ids[row, head : len(ids)]
    with torch.inference_mode():
        logits = model(
            input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)
        ).logits
    targets = labels[:, 1:].to(logits.device)  # position t predicts token t + 1
    scored = targets != -100
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1][scored].float(), targets[scored], reduction="none"
    )
    rows = torch.arange(len(encoded), device=logits.device).unsqueeze(1).expand_as(targets)
    sums = torch.zeros(len(encoded), device=logits.device).index_add_(0, rows[scored], nll)
    return (sums / scored.sum(dim=1)).tolist()
