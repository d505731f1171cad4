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
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from glan.testing.fake_server import FakeServer

OUTCOMES = ("ok", "expire", "all_failed", "validation_failed", "quota")


@dataclass
class _Batch:
    id: str
    shape: str  # openai | anthropic
    lines: list[tuple[str, dict[str, Any]]]  # custom_id, OpenAI-style chat body (or params)
    outcome: str
    created: float
    metadata: dict[str, Any]
    input_file_id: str | None = None
    status: str = "validating"
    polls: int = 0
    cancelled: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes = b""
    completed: int = 0
    failed: int = 0
    counts: dict[str, int] = field(default_factory=dict)


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
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self.hold = False  # while True, batches stay in progress
        self.outcomes: list[str] = []  # queued outcomes of the next batches
        self.batches: dict[str, _Batch] = {}
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
    def azure_url(self) -> str:
        return f"http://{self.host}:{self.port}/openai"

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
        return web.json_response(self._openai_view(batch))

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
                "data": [self._openai_view(b) for b in page],
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
        return web.json_response(self._openai_view(batch))

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
            self._openai_view(batch) if batch.shape == "openai" else self._anthropic_view(batch)
        )

    def _openai_view(self, b: _Batch) -> dict[str, Any]:
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id or "",
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created),
            "request_counts": {
                "total": len(b.lines),
                "completed": b.completed,
                "failed": b.failed,
            },
            "metadata": b.metadata,
        }

    # ---- Anthropic ---------------------------------------------------------------------------
    async def _a_create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.requests_seen.append(body)
        lines = [(r["custom_id"], r["params"]) for r in body["requests"]]
        batch = self._new_batch("anthropic", lines, {})
        return web.json_response(self._anthropic_view(batch))

    async def _a_list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batches = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        page = [self._anthropic_view(b) for b in batches if b.shape == "anthropic"]
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
        return web.json_response(self._anthropic_view(batch))

    async def _a_cancel(self, request: web.Request) -> web.Response:
        return await self._cancel(request)

    async def _a_results(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.status != "ended":
            return web.json_response({"error": {"message": "not ended"}}, status=404)
        return web.Response(body=batch.results, content_type="application/binary")

    def _anthropic_view(self, b: _Batch) -> dict[str, Any]:
        ended = b.status == "ended"
        processing = 0 if ended else len(b.lines)
        counts = {
            "processing": processing,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
            **(b.counts if ended else {}),
        }
        stamp = datetime.fromtimestamp(b.created, UTC).isoformat()
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.status,
            "request_counts": counts,
            "created_at": stamp,
            "expires_at": stamp,
            "ended_at": stamp if ended else None,
            "archived_at": None,
            "cancel_initiated_at": stamp if b.cancelled else None,
            "results_url": f"http://{self.host}:{self.port}/v1/messages/batches/{b.id}/results"
            if ended
            else None,
        }

    # ---- the batch life ----------------------------------------------------------------------
    def _new_batch(
        self, shape: str, lines: list[tuple[str, dict[str, Any]]], metadata: dict[str, Any]
    ) -> _Batch:
        with self._lock:
            outcome = self.outcomes.pop(0) if self.outcomes else "ok"
            if outcome == "ok" and self.expire_rate and self._rng.random() < self.expire_rate:
                outcome = "expire"
            ids = [key for key, _ in lines]
            batch = _Batch(
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

    def _ended(self, b: _Batch) -> bool:
        return b.status in ("completed", "failed", "expired", "cancelled", "ended")

    def _advance(self, b: _Batch) -> None:
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

    def _finish(self, b: _Batch, how: str) -> None:
        with self._lock:
            order = list(range(len(b.lines)))
            done_until = len(order) if how == "completed" else len(order) // 2
            ok, bad = [], []
            for i, (key, body) in enumerate(b.lines):
                self._live[key] -= 1
                if b.outcome == "all_failed":
                    bad.append(self._failed_line(b, key, "server_error"))
                elif i >= done_until:
                    bad.append(self._failed_line(b, key, f"batch_{how}"))
                elif self.line_failure_rate and self._rng.random() < self.line_failure_rate:
                    bad.append(self._failed_line(b, key, "server_error"))
                elif self.refuse_output_format and "output_config" in body:
                    bad.append(self._failed_line(b, key, "output_format"))
                else:
                    self.answered[key] += 1
                    ok.append(self._ok_line(b, key, body))
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

    def _failed_line(self, b: _Batch, key: str, code: str) -> dict[str, Any]:
        if b.shape == "anthropic":
            if code in ("server_error", "output_format"):
                error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
                if code == "output_format":
                    message = "output_config.format: this model does not support it"
                    error["error"] = {"type": "invalid_request_error", "message": message}
                return {"custom_id": key, "result": {"type": "errored", "error": error}}
            kind = "expired" if code == "batch_expired" else "canceled"
            return {"custom_id": key, "result": {"type": kind}}
        if code == "server_error":
            body = {"error": {"message": "The server had an error", "type": "server_error"}}
            return {
                "id": f"req_{key[:8]}",
                "custom_id": key,
                "response": {"status_code": 500, "request_id": "r", "body": body},
                "error": None,
            }
        return {
            "id": f"req_{key[:8]}",
            "custom_id": key,
            "response": None,
            "error": {
                "code": code,
                "message": f"This request could not be executed "
                f"before the batch was {code.removeprefix('batch_')}.",
            },
        }

    def _ok_line(self, b: _Batch, key: str, body: dict[str, Any]) -> dict[str, Any]:
        if b.shape == "anthropic":
            return {
                "custom_id": key,
                "result": {"type": "succeeded", "message": self._message(body)},
            }
        content = self.chat.replier(body)
        if not isinstance(content, str):
            content = orjson.dumps(content).decode()
        prompt = sum(len(m["content"]) for m in body["messages"]) // 4 + 1
        completion = {
            "id": f"chatcmpl-{key[:8]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(content) // 4 + 1,
                "total_tokens": prompt + len(content) // 4 + 1,
            },
        }
        return {
            "id": f"req_{key[:8]}",
            "custom_id": key,
            "response": {"status_code": 200, "request_id": "r", "body": completion},
            "error": None,
        }

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        """A Messages API reply from the chat replier, for params in Anthropic's form."""
        messages = list(params["messages"])
        if params.get("system"):
            messages.insert(0, {"role": "system", "content": params["system"]})
        chat: dict[str, Any] = {"messages": messages, "seed": None}
        tools = params.get("tools") or []
        fmt = (params.get("output_config") or {}).get("format")
        schema = tools[0]["input_schema"] if tools else (fmt or {}).get("schema")
        if schema is not None:
            schema = _described_bounds(schema)
            chat["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
        content = self.chat.replier(chat)
        if tools:
            block = {
                "type": "tool_use",
                "id": "toolu_fake",
                "name": tools[0]["name"],
                "input": content,
            }
            stop = "tool_use"
        else:
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            block, stop = {"type": "text", "text": text}, "end_turn"
        prompt = sum(len(m["content"]) for m in messages) // 4 + 1
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": len(str(content)) // 4 + 1},
        }

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeBatchServer:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-batch", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeBatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _described_bounds(node: Any) -> Any:
    """A schema with the bounds its descriptions state put back: the fake model follows a
    described constraint as a real one follows its prompt (glan.llm.batch.anthropic_batch)."""
    if isinstance(node, list):
        return [_described_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _described_bounds(v) for k, v in node.items()}
    found = re.search(r"\(constraints: ([^)]*)\)", str(node.get("description", "")))
    if found:
        for item in found.group(1).split(", "):
            key, _, value = item.partition("=")
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out
