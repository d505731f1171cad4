"""The life of a fake provider batch (glan.testing.fake_batch serves it): a batch moves one
status per poll (OpenAI: validating, in_progress, finalizing, completed; Anthropic:
in_progress, ended) unless `hold` keeps it in progress, and finishes with its outcome, random
or queued: failed lines, expiry part done, cancel with partial results, all lines failed, a
batch refused by validation or by the enqueued-token quota; output is shuffled. Counters say
what was submitted and whether any custom_id was submitted while a live batch held it or after
it had been answered (paid twice), or again once its reply was lost for good (paid after loss).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from glan.testing.fake_batch_faults import BatchFaults, openai_token_limit
from glan.testing.fake_batch_wire import FakeBatch, failed_line, ok_line, ok_tokens, refused_line
from glan.testing.fake_refusals import (
    anthropic_refusal,
    lacks_json_schema_error,
    reasoning_model_refusal,
    strict_schema_refusal,
)
from glan.testing.fake_server import FakeServer

OUTCOMES = ("ok", "expire", "all_failed", "validation_failed", "quota")


@dataclass
class FakeBatchLife:
    chat: FakeServer = field(default_factory=FakeServer)
    line_failure_rate: float = 0.0  # share of lines failed (HTTP 500 in the error file)
    # Lines whose body this picks fail with the same HTTP 500 every time (a body that breaks
    # the model), while the rest of their batch is served.
    poisoned_when: Callable[[dict[str, Any]], bool] | None = None
    expire_rate: float = 0.0  # share of batches that expire with part of their lines done
    shuffle: bool = True
    steps: int = 2  # polls spent in progress
    rng_seed: int = 0
    # Anthropic lines asking for JSON-schema output are refused (a model without it).
    refuse_output_format: bool = False
    # Today's models, line by line (glan.testing.fake_refusals): an OpenAI reasoning model
    # (max_tokens, top_p, temperature refused), OpenAI's strict schema checks, a deployment
    # without json_schema output, a Claude model refusing temperature.
    reasoning_model: bool = False
    strict_like_openai: bool = False
    lacks_json_schema: bool = False
    refuse_temperature: bool = False
    faults: BatchFaults = field(default_factory=BatchFaults)

    def __post_init__(self) -> None:
        self.hold = False  # while True, batches stay in progress
        self.outcomes: list[str] = []  # queued outcomes of the next batches
        self.batches: dict[str, FakeBatch] = {}
        self.files: dict[str, bytes] = {}
        self.lines_submitted = 0
        self.submitted: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # custom_id -> successful lines returned
        self.paid_twice = 0  # lines submitted while live elsewhere or already answered
        self.lost: Counter[str] = Counter()  # custom_id -> replies answered, then lost for good
        self.paid_after_loss = 0  # lines submitted again once their only reply was lost
        self.created = threading.Event()  # set when the first batch is created
        self._rng = random.Random(self.rng_seed)
        self._live: Counter[str] = Counter()
        self._n = 0
        self._lock = threading.Lock()

    def enqueue(self, *outcomes: str) -> None:
        for outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
        self.outcomes.extend(outcomes)

    @property
    def seen_twice(self) -> list[str]:
        """custom_ids submitted in more than one batch (a failed line sent again counts)."""
        return [key for key, n in self.submitted.items() if n > 1]

    def live_batches(self) -> list[str]:
        return [b.id for b in self.batches.values() if not self._ended(b)]

    def _next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:06d}"

    def _new_batch(
        self, shape: str, lines: list[tuple[str, dict[str, Any]]], metadata: dict[str, Any]
    ) -> FakeBatch:
        with self._lock:
            outcome = self.outcomes.pop(0) if self.outcomes else "ok"
            if outcome == "ok" and self.expire_rate and self._rng.random() < self.expire_rate:
                outcome = "expire"
            ids = [key for key, _ in lines]
            batch = FakeBatch(
                self._next_id("batch_" if shape == "openai" else "msgbatch_"),
                shape,
                lines,
                outcome,
                time.time(),
                metadata,
                status="validating" if shape == "openai" else "in_progress",
            )
            if len(set(ids)) != len(ids):
                batch.outcome = "validation_failed"
            if batch.outcome not in ("validation_failed", "quota"):
                for key in ids:
                    if self._live[key] or self.answered[key]:
                        self.paid_twice += 1
                    elif self.lost[key]:
                        self.paid_after_loss += 1
                    self._live[key] += 1
                    self.submitted[key] += 1
                self.lines_submitted += len(ids)
            self.batches[batch.id] = batch
        self.created.set()
        return batch

    def _ended(self, b: FakeBatch) -> bool:
        return b.status in ("completed", "failed", "expired", "cancelled", "ended")

    def _advance(self, b: FakeBatch) -> None:
        """One poll, one step; a held batch stays in progress (unless cancelled)."""
        if self._ended(b):
            return
        if b.outcome in ("validation_failed", "quota"):
            code = "duplicate_custom_id" if b.outcome == "validation_failed" else None
            b.errors = [
                {
                    "code": code or "token_limit_exceeded",
                    "line": 1 if code else None,
                    "message": "custom_id must be unique"
                    if code
                    else openai_token_limit(self.faults.enqueued_token_limit or 2_000_000),
                    "param": None,
                }
            ]
            b.status = "failed"
            return
        if b.cancelled:
            self._finish(b, "cancelled")
            return
        if self.hold:
            b.status = "in_progress"
            return
        b.polls += 1
        if b.shape == "openai":
            if b.polls == 1:
                b.status = "in_progress"
            elif b.polls <= self.steps:
                pass
            elif b.status == "in_progress":
                b.status = "finalizing"
            else:
                self._finish(b, "expired" if b.outcome == "expire" else "completed")
        elif b.polls > self.steps:
            self._finish(b, "expired" if b.outcome == "expire" else "completed")

    def refusal(self, shape: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The error a body (a line's, or an online request's) meets at this fake's model."""
        if shape == "anthropic":
            return anthropic_refusal(body) if self.refuse_temperature else None
        fmt = (body.get("response_format") or {}).get("type")
        if self.lacks_json_schema and fmt == "json_schema":
            return lacks_json_schema_error()
        return (reasoning_model_refusal(body) if self.reasoning_model else None) or (
            strict_schema_refusal(body) if self.strict_like_openai else None
        )

    def _finish(self, b: FakeBatch, how: str) -> None:
        with self._lock:
            order = list(range(len(b.lines)))
            done_until = len(order) if how == "completed" else len(order) // 2
            ok, bad = [], []
            for i, (key, body) in enumerate(b.lines):
                self._live[key] -= 1
                if b.outcome == "all_failed":
                    bad.append(failed_line(b, key, "server_error"))
                elif i >= done_until:
                    bad.append(failed_line(b, key, f"batch_{how}"))
                elif (self.line_failure_rate and self._rng.random() < self.line_failure_rate) or (
                    self.poisoned_when is not None and self.poisoned_when(body)
                ):
                    bad.append(failed_line(b, key, "server_error"))
                elif self.refuse_output_format and "output_config" in body:
                    bad.append(failed_line(b, key, "output_format"))
                elif (refusal := self.refusal(b.shape, body)) is not None:
                    bad.append(refused_line(b, key, refusal))
                else:
                    self.answered[key] += 1
                    ok.append(ok_line(b, key, body, self.chat.replier))
            if self.shuffle:
                self._rng.shuffle(ok)
                self._rng.shuffle(bad)
            b.tokens = ok_tokens(ok)
            b.lost = self.faults.results_lost()
            if b.lost:  # every reply of this batch is paid for, then lost for good
                for x in ok:
                    self.answered[x["custom_id"]] -= 1
                    self.lost[x["custom_id"]] += 1
        b.completed, b.failed = len(ok), len(bad)
        gone = b.lost and not self.faults.lost_unoffered  # else there, never offered
        if b.shape == "openai":
            if ok:
                b.output_file_id = self._next_id("file-")
                self.files[b.output_file_id] = b"".join(orjson.dumps(x) + b"\n" for x in ok)
            if bad:
                b.error_file_id = self._next_id("file-")
                self.files[b.error_file_id] = b"".join(orjson.dumps(x) + b"\n" for x in bad)
            b.status = how
            if gone:
                for file_id in (b.output_file_id, b.error_file_id):
                    self.files.pop(file_id or "", None)
        else:
            mixed = ok + bad
            if self.shuffle:
                self._rng.shuffle(mixed)
            b.results = b"".join(orjson.dumps(x) + b"\n" for x in mixed)
            b.counts = Counter(x["result"]["type"] for x in mixed)
            b.status = "ended"
            if gone:
                b.archived = time.time()
