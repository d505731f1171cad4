"""Fake batch APIs for tests: OpenAI/Azure (files + batches) and Anthropic (Message Batches).

One aiohttp app serves both shapes on loopback, in a background thread. Every line is answered
by a `FakeServer`'s replier (the fake chat server's replies: schema-valid, prompt-dependent), so
batch and online runs see the same replies. A batch moves one status per poll (OpenAI:
validating, in_progress, finalizing, completed; Anthropic: in_progress, ended) unless `hold`
keeps it in progress. Faults, random or queued per batch: failed lines (in the error file),
expiry part done, cancel with partial results, all lines failed (a "completed" batch without an
output file), a batch refused by validation or by the enqueued-token quota; output is shuffled.
Counters say what was submitted and whether any custom_id was submitted while a live batch held
it or after it had been answered (paid twice).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from glan.testing.fake_batch_wire import (
    FakeBatch,
    anthropic_view,
    failed_line,
    ok_line,
    openai_view,
    refused_line,
)
from glan.testing.fake_refusals import (
    anthropic_refusal,
    lacks_json_schema_error,
    reasoning_model_refusal,
    strict_schema_refusal,
)
from glan.testing.fake_server import FakeServer

OUTCOMES = ("ok", "expire", "all_failed", "validation_failed", "quota")


@dataclass
class FakeBatchServer:
    chat: FakeServer = field(default_factory=FakeServer)
    line_failure_rate: float = 0.0  # share of lines failed (HTTP 500 in the error file)
    expire_rate: float = 0.0  # share of batches that expire with part of their lines done
    shuffle: bool = True
    steps: int = 2  # polls spent in progress
    rng_seed: int = 0
    api_key: str | None = None
    # Anthropic lines asking for JSON-schema output are refused (a model without it).
    refuse_output_format: bool = False
    # Today's models, line by line (glan.testing.fake_refusals): an OpenAI reasoning model
    # (max_tokens, top_p, temperature refused), OpenAI's strict schema checks, a deployment
    # without json_schema output, a Claude model refusing temperature.
    reasoning_model: bool = False
    strict_like_openai: bool = False
    lacks_json_schema: bool = False
    refuse_temperature: bool = False
    # The next creates make their batch, then answer 502 (an answer lost on the way back).
    lose_create_answers: int = 0
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self.hold = False  # while True, batches stay in progress
        self.outcomes: list[str] = []  # queued outcomes of the next batches
        self.batches: dict[str, FakeBatch] = {}
        self.files: dict[str, bytes] = {}
        self.lines_submitted = 0
        self.submitted: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # custom_id -> successful lines returned
        self.paid_twice = 0  # lines submitted while live elsewhere or already answered
        self.created = threading.Event()  # set when the first batch is created
        self.requests_seen: list[dict[str, Any]] = []  # create bodies (wire-format checks)
        self._rng = random.Random(self.rng_seed)
        self._live: Counter[str] = Counter()
        self._n = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting ---------------------------------------------------------------------------
    def enqueue(self, *outcomes: str) -> None:
        for outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
        self.outcomes.extend(outcomes)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def azure_url(self) -> str:
        return f"http://{self.host}:{self.port}/openai"

    @property
    def seen_twice(self) -> list[str]:
        """custom_ids submitted in more than one batch (a failed line sent again counts)."""
        return [key for key, n in self.submitted.items() if n > 1]

    def live_batches(self) -> list[str]:
        return [b.id for b in self.batches.values() if not self._ended(b)]

    def _next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:06d}"

    # ---- HTTP --------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        for prefix in ("/v1", "/openai"):
            app.router.add_post(f"{prefix}/files", self._upload)
            app.router.add_get(f"{prefix}/files/{{id}}/content", self._download)
            app.router.add_post(f"{prefix}/batches", self._create)
            app.router.add_get(f"{prefix}/batches", self._list)
            app.router.add_get(f"{prefix}/batches/{{id}}", self._get)
            app.router.add_post(f"{prefix}/batches/{{id}}/cancel", self._cancel)
        app.router.add_post("/v1/messages/batches", self._a_create)
        app.router.add_get("/v1/messages/batches", self._a_list)
        app.router.add_get("/v1/messages/batches/{id}", self._a_get)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._a_cancel)
        app.router.add_get("/v1/messages/batches/{id}/results", self._a_results)
        return app

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.path.startswith("/openai") and "api-version" not in request.query:
            return web.json_response({"error": {"message": "api-version missing"}}, status=404)
        if not self.api_key:
            return None
        # Each provider reads its key from its own header.
        if request.path.startswith("/openai"):
            given = request.headers.get("api-key")
        elif request.path.startswith("/v1/messages"):
            given = request.headers.get("x-api-key")
        else:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given != self.api_key:
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        return None

    # ---- OpenAI / Azure ----------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        form = await request.post()
        upload = form["file"]
        data = upload.file.read() if hasattr(upload, "file") else bytes(upload)  # type: ignore[union-attr]
        file_id = self._next_id("file-")
        self.files[file_id] = data
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": getattr(upload, "filename", "input.jsonl"),
                "purpose": form["purpose"],
                "status": "processed",
            }
        )

    async def _download(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        data = self.files.get(request.match_info["id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.requests_seen.append(body)
        data = self.files.get(body.get("input_file_id"))
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=400)
        lines = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        batch = self._new_batch(
            "openai", [(x["custom_id"], x["body"]) for x in lines], body.get("metadata") or {}
        )
        batch.input_file_id = body["input_file_id"]
        return self._created(openai_view(batch))

    def _created(self, view: dict[str, Any]) -> web.Response:
        if self.lose_create_answers > 0:
            self.lose_create_answers -= 1
            return web.json_response({"error": {"message": "bad gateway"}}, status=502)
        return web.json_response(view)

    async def _list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batches = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        batches = [b for b in batches if b.shape == "openai"]
        after = request.query.get("after")
        if after:
            batches = [b for b in batches if b.id < after]
        limit = int(request.query.get("limit", 20))
        page = batches[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [openai_view(b) for b in page],
                "has_more": len(batches) > limit,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        return web.json_response(openai_view(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if self._ended(batch):
            return web.json_response({"error": {"message": "batch already ended"}}, status=409)
        batch.cancelled = True
        batch.status = "cancelling" if batch.shape == "openai" else "canceling"
        return web.json_response(
            openai_view(batch) if batch.shape == "openai" else anthropic_view(batch, self.origin)
        )

    # ---- Anthropic ---------------------------------------------------------------------------
    async def _a_create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.requests_seen.append(body)
        lines = [(r["custom_id"], r["params"]) for r in body["requests"]]
        batch = self._new_batch("anthropic", lines, {})
        return self._created(anthropic_view(batch, self.origin))

    async def _a_list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batches = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        page = [anthropic_view(b, self.origin) for b in batches if b.shape == "anthropic"]
        limit = int(request.query.get("limit", 20))
        return web.json_response(
            {
                "data": page[:limit],
                "has_more": len(page) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[min(limit, len(page)) - 1]["id"] if page else None,
            }
        )

    async def _a_get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        return web.json_response(anthropic_view(batch, self.origin))

    async def _a_cancel(self, request: web.Request) -> web.Response:
        return await self._cancel(request)

    async def _a_results(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.status != "ended":
            return web.json_response({"error": {"message": "not ended"}}, status=404)
        return web.Response(body=batch.results, content_type="application/binary")

    # ---- the batch life ----------------------------------------------------------------------
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
                    else "Enqueued token limit reached",
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

    def _refusal(self, b: FakeBatch, body: dict[str, Any]) -> dict[str, Any] | None:
        """The error a line's body meets at this fake's model, if any."""
        if b.shape == "anthropic":
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
                elif self.line_failure_rate and self._rng.random() < self.line_failure_rate:
                    bad.append(failed_line(b, key, "server_error"))
                elif self.refuse_output_format and "output_config" in body:
                    bad.append(failed_line(b, key, "output_format"))
                elif (refusal := self._refusal(b, body)) is not None:
                    bad.append(refused_line(b, key, refusal))
                else:
                    self.answered[key] += 1
                    ok.append(ok_line(b, key, body, self.chat.replier))
            if self.shuffle:
                self._rng.shuffle(ok)
                self._rng.shuffle(bad)
        b.completed, b.failed = len(ok), len(bad)
        if b.shape == "openai":
            if ok:
                b.output_file_id = self._next_id("file-")
                self.files[b.output_file_id] = b"".join(orjson.dumps(x) + b"\n" for x in ok)
            if bad:
                b.error_file_id = self._next_id("file-")
                self.files[b.error_file_id] = b"".join(orjson.dumps(x) + b"\n" for x in bad)
            b.status = how
        else:
            mixed = ok + bad
            if self.shuffle:
                self._rng.shuffle(mixed)
            b.results = b"".join(orjson.dumps(x) + b"\n" for x in mixed)
            b.counts = Counter(x["result"]["type"] for x in mixed)
            b.status = "ended"

    # ---- lifecycle: the chat server's loop in a thread ---------------------------------------------------------------------------
    start = FakeServer.start
    stop = FakeServer.stop

    def __enter__(self) -> FakeBatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
