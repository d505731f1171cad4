"""When the next batch may go, once a provider refused one for a quota.

A quota refusal is never the lines' fault, so they go again without using a round. While the
run has a batch of its own out there, the next goes once one of them has finished (that frees
enqueued tokens and, its files deleted, file slots). With none out there, the refused batch was
alone: too large for the token quota (later batches are half its size), or the quota is held by
work outside this run: a refusal at create (Azure's "fail fast") is followed by a pause that
doubles, as Azure asks. A file quota with nothing of the run's to free stops with one line.
"""

from __future__ import annotations

import time

from glan.llm.batch.api import OverQuota
from glan.llm.errors import EndpointFatal

MAX_PAUSE_S = 600.0


class QuotaGate:
    def __init__(self, provider: str, max_lines: int, first_pause_s: float) -> None:
        self.provider = provider
        self.max_lines = max_lines  # lines per batch, halved by refusals of a batch alone
        self.first_pause_s = first_pause_s
        self.held = False  # a batch was refused: send no more until one of the run's settles
        self._pauses = 0  # refusals at create of a batch alone, in a row
        self._resume_at = 0.0  # no batch is sent before (monotonic)

    def blocked(self, others_live: bool) -> bool:
        return (self.held and others_live) or time.monotonic() < self._resume_at

    def refused_at_create(self, lines: int, exc: OverQuota, others_live: bool) -> None:
        self.held = True
        if others_live:
            return
        if exc.files:
            raise EndpointFatal(
                f"{self.provider} refused to take another file: {exc}. Delete files the "
                "resource holds (or set batch.file_expiry_days), then re-run the same command."
            )
        self._halve(lines, str(exc))
        self._pauses += 1
        pause = min(MAX_PAUSE_S, self.first_pause_s * 2 ** (self._pauses - 1))
        self._resume_at = time.monotonic() + pause

    def refused_once_validated(self, lines: int, why: str | None, others_live: bool) -> None:
        """A created batch failed for the enqueued-token quota (OpenAI, Azure elsewhere)."""
        self.held = True
        if not others_live:
            self._halve(lines, why)

    def created(self) -> None:
        self._pauses = 0

    def settled(self) -> None:
        self.held = False

    def _halve(self, lines: int, why: str | None) -> None:
        if lines <= 1:
            raise EndpointFatal(
                f"{self.provider} refused a batch of one request for its quota: {why}"
            )
        self.max_lines = min(self.max_lines, max(1, lines // 2))
