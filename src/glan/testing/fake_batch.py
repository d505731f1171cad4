"""Fake batch APIs for tests: OpenAI/Azure (files + batches) and Anthropic (Message Batches).

One aiohttp app serves both shapes on loopback, in a background thread. Every line is answered
by a `FakeServer`'s replier (the fake chat server's replies: schema-valid, prompt-dependent), so
batch and online runs see the same replies. How a batch lives, and the counters of what was
paid, are glan.testing.fake_batch_life's; the provider faults of glan.testing.fake_batch_faults
are set on `faults`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from glan.testing.fake_batch_life import FakeBatchLife
from glan.testing.fake_batch_wire import FakeBatch, anthropic_view, enqueued_tokens, openai_view
from glan.testing.fake_replies import fixed_completion
from glan.testing.fake_server import FakeServer


@dataclass
class FakeBatchServer(FakeBatchLife):
    api_key: str | None = None
    # The next creates make their batch, then answer 502 (an answer lost on the way back).
    lose_create_answers: int = 0
    # The batch model answers online chat completions too (OpenAI's do; an Azure GlobalBatch
    # deployment does not): what glan's probe before the first batch asks.
    serves_online: bool = True
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.requests_seen: list[dict[str, Any]] = []  # create bodies (wire-format checks)
        self.online_bodies: list[dict[str, Any]] = []  # online chat requests (the probe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def azure_url(self) -> str:
        return f"http://{self.host}:{self.port}/openai"

    # ---- HTTP --------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        for prefix in ("/v1", "/openai"):
            app.router.add_post(f"{prefix}/files", self._upload)
            app.router.add_get(f"{prefix}/files/{{id}}/content", self._download)
            app.router.add_delete(f"{prefix}/files/{{id}}", self._delete)
            app.router.add_post(f"{prefix}/batches", self._create)
            app.router.add_get(f"{prefix}/batches", self._list)
            app.router.add_get(f"{prefix}/batches/{{id}}", self._get)
            app.router.add_post(f"{prefix}/batches/{{id}}/cancel", self._cancel)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{model}/chat/completions", self._chat)
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
    async def _chat(self, request: web.Request) -> web.Response:
        """One online chat completion from the batch model: refused as its lines would be."""
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.online_bodies.append(body)
        if not self.serves_online:
            message = "The chatCompletion operation does not work with this deployment type."
            error = {"error": {"code": "OperationNotSupported", "message": message}}
            return web.json_response(error, status=400)
        if (error := self.refusal("openai", body)) is not None:
            return web.json_response(error, status=400)
        return web.Response(body=fixed_completion('{"ok": true}'), content_type="application/json")

    async def _upload(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if (refused := self.faults.upload_refused(len(self.files))) is not None:
            return refused
        form = await request.post()
        if "expires_after[seconds]" in form:
            expiry = (form.get("expires_after[anchor]"), int(str(form["expires_after[seconds]"])))
            if (refused := self.faults.expiry_refused("expires_after", expiry)) is not None:
                return refused
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
        return await self.faults.serve(request, self.files.get(request.match_info["id"]))

    async def _delete(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        file_id = request.match_info["id"]
        if self.files.pop(file_id, None) is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        self.faults.deleted.append(file_id)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.requests_seen.append(body)
        if "output_expires_after" in body:
            expiry = body["output_expires_after"]
            if (refused := self.faults.expiry_refused("output_expires_after", expiry)) is not None:
                return refused
        data = self.files.get(body.get("input_file_id"))
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=400)
        lines = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        live = sum(self._live.values())
        tokens = sum(enqueued_tokens(x["body"]) for x in lines)
        over = self.faults.over_tokens(self._enqueued(), tokens)
        azure = request.path.startswith("/openai")
        if (refused := self.faults.create_refused(live, len(lines), over and azure)) is not None:
            return refused
        if over:
            self.outcomes.insert(0, "quota")  # OpenAI: created, then failed for the quota
        batch = self._new_batch(
            "openai", [(x["custom_id"], x["body"]) for x in lines], body.get("metadata") or {}
        )
        batch.input_file_id = body["input_file_id"]
        batch.enqueued = 0 if batch.outcome == "quota" else tokens
        return self._created(self._openai_view(batch))

    def _enqueued(self) -> int:
        return sum(b.enqueued for b in self.batches.values() if not self._ended(b))

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
                "data": [self._openai_view(b) for b in page],
                "has_more": len(batches) > limit,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request) or self.faults.status_refused()) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        view = self._openai_view(batch)
        if batch.completed and self.faults.hidden(batch.lost):
            view["output_file_id"] = None
        return web.json_response(view)

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
            self._openai_view(batch)
            if batch.shape == "openai"
            else anthropic_view(batch, self.origin)
        )

    # ---- Anthropic ---------------------------------------------------------------------------
    async def _a_create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.requests_seen.append(body)
        if (refused := self.faults.create_refused(0, 0, False)) is not None:
            return refused
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
        if (refused := self._refused(request) or self.faults.status_refused()) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        view = anthropic_view(batch, self.origin)
        if batch.status == "ended" and self.faults.hidden(batch.lost):
            view["results_url"] = None
        return web.json_response(view)

    async def _a_cancel(self, request: web.Request) -> web.Response:
        return await self._cancel(request)

    async def _a_results(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        ended = batch is not None and batch.status == "ended" and batch.archived is None
        return await self.faults.serve(request, batch.results if ended else None)  # type: ignore[union-attr]

    def _openai_view(self, batch: FakeBatch) -> dict[str, Any]:
        return openai_view(batch, azure_style=self.faults.azure_style)

    # ---- lifecycle: the chat server's loop in a thread ---------------------------------------------------------------------------
    start = FakeServer.start
    stop = FakeServer.stop

    def __enter__(self) -> FakeBatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
