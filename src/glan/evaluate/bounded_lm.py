"""Scoring batches bounded by the memory of their logits, not only by a row count.

A forward pass returns a logit for every position and every vocabulary entry, in fp32 on the
CPU: rows x width x vocabulary x 4 bytes, and the pass and lm-eval's log-softmax each briefly
hold a second copy. At lm-eval's fixed batch of 8 rows, MMLU's 5-shot prompts (up to ~2,700
tokens) under SmolLM2's 49,152-entry vocabulary made 8 x 2,700 x 49,152 x 4 B ~ 4.2 GB twice
over: the 8-10 GB peaks of a 135M model's evaluation (BENCHMARKS.md). Here a batch holds
--batch-size rows at most, and fewer where its logits would pass answer_loss.LOGITS_BYTES (never
fewer than one row), so long prompts go through one or two at a time and short ones eight at a
time; each item's score is the same either way up to float rounding (a row's logits do not
depend on the other rows).
"""

from __future__ import annotations

from typing import Any

from lm_eval.models.huggingface import HFLM

from glan.evaluate.answer_loss import rows_within, vocab_size


class BoundedHFLM(HFLM):
    """lm-eval's Hugging Face model whose loglikelihood batches follow rows_within. lm-eval sizes
    a batch per position through its batch scheduler, which it consults only for batch size
    "auto" (else it would measure the largest batch that does not run out of memory: on a CPU,
    always its maximum): the scheduler is glan's, and "auto" is what lm-eval sees only while it
    scores loglikelihoods. Generation keeps the fixed batch (a step's logits are one position
    per row)."""

    def __init__(self, *, batch_size: int, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self._bounded = False
        self._first, self._rows = 0, 0  # the batch being gathered: first position, rows

    @property
    def batch_size(self) -> Any:
        return "auto" if getattr(self, "_bounded", False) else self.batch_size_per_gpu

    def _loglikelihood_tokens(
        self, requests: Any, disable_tqdm: bool = False, override_bs: int | None = None
    ) -> Any:
        self._bounded, self._first, self._rows = True, 0, 0
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        finally:
            self._bounded = False

    def _batch_scheduler(self, pos: int, n_reordered_requests: Any) -> int:
        """The size of the batch that holds `pos` (lm-eval asks at every position and closes a
        batch when it holds that many). Requests come longest first, so a batch's first
        request sets its width."""
        if pos == 0 or pos >= self._first + self._rows:
            _, context, continuation = n_reordered_requests[pos]
            width = min(len(context) + len(continuation) - 1, self.max_length)
            self._first = pos
            self._rows = rows_within(width, vocab_size(self.model), self.batch_size_per_gpu)
        return self._rows
