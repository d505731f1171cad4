"""A scriptable fake OpenAI-compatible chat server: real HTTP on loopback, for tests and benches.

It answers schema-aware (a request with a JSON schema gets a valid instance whose strings depend
on the prompt, so different prompts get different replies), and injects faults on demand: a
queue of one-off faults for the next requests, and random rates per fault kind.

Run in a background thread (`FakeServer().start()`, tests) or as a process
(`python -m glan.testing.fake_server --port N`, benchmarks, so the client has its own core).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from glan.testing.fake_refusals import (
    reasoning_model_refusal,
    reasoning_spent,
    strict_schema_refusal,
)
from glan.testing.fake_replies import Replier, default_replier, fixed_completion, request_key

FAULTS = (
    "500",
    "500_request_id",
    "503",
    "520",
    "429",
    "429_retry_after",
    "timeout",
    "reset",
    "malformed",
    "schema_invalid",
    "length",
    "empty",
    "garbage",
)

# The body of every HTTP 500 and 503 the server makes up, random or not.
SERVER_ERROR = {"error": {"message": "server error"}}
# OpenAI's own 500, which names a new request id in every answer ("500_request_id").
OPENAI_SERVER_ERROR = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if you keep seeing this "
    "error. (Please include the request ID req_{} in your message.)"
)


@dataclass
class FakeServer:
    replier: Replier = default_replier
    latency_s: float = 0.0
    fault_rates: dict[str, float] = field(default_factory=dict)
    rng_seed: int = 0
    timeout_sleep_s: float = 3.0
    # 400 on response_format json_schema (then on json_object too, when "both").
    reject_response_format: str | None = None
    # The fault (a FAULTS kind) this predicate names for a body, every time it is asked.
    fault_when: Callable[[dict[str, Any]], str | None] | None = None
    # Bodies this predicate picks crash the grammar engine when sent with a response_format
    # (HTTP 500 naming the grammar, as llama.cpp's server does for a schema it cannot compile).
    grammar_crash_when: Callable[[dict[str, Any]], bool] | None = None
    api_key: str | None = None
    models: list[str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    fixed_reply: bytes | None = None  # benchmark mode: one precomputed body
    # This share of request bodies always gets HTTP 500 (the same error every time), chosen by
    # a hash of the body: a request that deterministically breaks the server. The error is a
    # random 500's, word for word: only repetition may tell them apart.
    poisoned_rate: float = 0.0
    # This share of request bodies (chosen by a hash of the body) is answered 429 with
    # Retry-After `throttle_retry_after_s` until `throttle_s` after the body was first seen,
    # while every other body is served: a busy organisation's quota, partial and steady.
    throttled_rate: float = 0.0
    throttle_s: float = 0.0
    throttle_retry_after_s: float = 0.2
    # Or exactly the bodies this predicate picks.
    throttle_when: Callable[[dict[str, Any]], bool] | None = None
    # An OpenAI reasoning model: refuses max_tokens, top_p and a non-default temperature, and
    # spends hidden reasoning tokens out of max_completion_tokens (glan.testing.fake_refusals).
    reasoning_model: bool = False
    # Strict json_schema bodies are checked as OpenAI checks them (its keyword subset, closed
    # objects, every key required) and refused with its words.
    strict_like_openai: bool = False
    # Called, in the server's thread, as each chat request arrives: a test breaks the endpoint
    # once the run has reached a given point, instead of after a given time.
    on_request: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.fault_rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.queue: list[str] = []
        self.requests = 0
        self.in_flight = 0  # requests being answered now, and the most there ever were
        self.max_in_flight = 0
        self.by_status: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # request_key -> 200 replies
        self.seen_bodies: list[dict[str, Any]] = []
        self.record_bodies = False
        self._rng = random.Random(self.rng_seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.rate_limited_until = 0.0  # time.monotonic() before which every request is refused
        self.first_seen: dict[str, float] = {}  # throttled bodies: when each was first asked
        self._rate_limit_status = 429
        self._rate_limit_retry_after: float | None = None

    # ---- scripting -------------------------------------------------------------------------
    def enqueue(self, *faults: str) -> None:
        """The next requests meet these faults, in order (then behaviour returns to normal)."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self.queue.extend(faults)

    def rate_limit_for(
        self, seconds: float, retry_after: float | None = 1.0, status: int = 429
    ) -> None:
        """Refuse every chat request for `seconds` from now (math.inf: for ever) with `status`
        (429, or 503 as some gateways do) and this Retry-After (None: no header)."""
        self.rate_limited_until = time.monotonic() + seconds
        self._rate_limit_status = status
        self._rate_limit_retry_after = retry_after

    def is_poisoned(self, body: dict[str, Any]) -> bool:
        """Whether this body is one of the `poisoned_rate` share that always fails."""
        if not self.poisoned_rate:
            return False
        return int(request_key(body), 16) / 16**16 < self.poisoned_rate

    def _throttled(self, body: dict[str, Any]) -> bool:
        """Whether this body is one of the `throttled_rate` share, still inside its window."""
        key = request_key(body)
        if self.throttle_when is not None:
            if not self.throttle_when(body):
                return False
        elif not self.throttled_rate or (
            int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 16**16 >= self.throttled_rate
        ):
            return False
        first = self.first_seen.setdefault(key, time.monotonic())
        return time.monotonic() - first < self.throttle_s

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _next_fault(self) -> str | None:
        with self._lock:
            if self.queue:
                return self.queue.pop(0)
            for kind, rate in self.fault_rates.items():
                if rate and self._rng.random() < rate:
                    return kind
        return None

    # ---- HTTP ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        data = [{"id": m, "object": "model"} for m in (self.models or ["fake-model"])]
        return web.json_response({"object": "list", "data": data})

    def _count(self, status: str) -> None:
        self.by_status[status] += 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Block until no chat request is inside a handler (requests a stopped client left
        behind are still answered into the void); AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight:
            assert time.monotonic() < deadline, f"{self.in_flight} requests still in flight"
            time.sleep(0.01)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.on_request is not None:
            self.on_request()
        if self.fixed_reply is not None:  # benchmark fast path
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return web.Response(body=self.fixed_reply, content_type="application/json")
        body = orjson.loads(await request.read())
        if self.record_bodies:
            self.seen_bodies.append(body)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._count("401")
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if self.models is not None and body.get("model") not in self.models:
            self._count("404")
            return web.json_response({"error": {"message": "model not found"}}, status=404)
        refusal = (reasoning_model_refusal(body) if self.reasoning_model else None) or (
            strict_schema_refusal(body) if self.strict_like_openai else None
        )
        if refusal is not None:
            self._count("400_refused")
            return web.json_response(refusal, status=400)
        fmt = (body.get("response_format") or {}).get("type")
        if self.reject_response_format and fmt in (
            ("json_schema", "json_object")
            if self.reject_response_format == "both"
            else ("json_schema",)
        ):
            self._count("400")
            return web.json_response(
                {"error": {"message": f"response_format {fmt} is not supported"}}, status=400
            )
        if fmt and self.grammar_crash_when is not None and self.grammar_crash_when(body):
            self._count("grammar_crash")
            return web.json_response(
                {"error": {"message": "failed to parse grammar: rule too large"}}, status=500
            )
        if time.monotonic() < self.rate_limited_until:
            status = self._rate_limit_status
            self._count(f"{status}_window")
            retry_after = self._rate_limit_retry_after
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            return web.json_response(
                {"error": {"message": "rate limited, try later"}}, status=status, headers=headers
            )
        if self._throttled(body):
            self._count("429_throttled")
            return web.json_response(
                {"error": {"message": "rate limited: this organisation is over its quota"}},
                status=429,
                headers={"Retry-After": f"{self.throttle_retry_after_s:g}"},
            )
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.is_poisoned(body):
            self._count("poisoned")
            return web.json_response(SERVER_ERROR, status=500)
        fault = self.fault_when(body) if self.fault_when is not None else None
        fault = fault or self._next_fault()
        if fault is not None:
            response = await self._fault(fault, request, body)
            if response is not None:
                return response
        content = self.replier(body)
        if not isinstance(content, str):
            content = orjson.dumps(content).decode()
        self.answered[request_key(body)] += 1
        self._count("200")
        return self._completion(body, content, "stop")

    def _completion(self, body: dict[str, Any], content: str, finish: str) -> web.Response:
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        reasoning = 0
        if self.reasoning_model:
            reasoning, fits = reasoning_spent(body, len(content) // 4 + 1)
            if not fits:  # the limit went on reasoning: nothing visible, and it is paid
                content, finish = "", "length"
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_chars // 4 + 1,
                "completion_tokens": len(content) // 4 + 1 + reasoning,
                "total_tokens": prompt_chars // 4 + len(content) // 4 + 2 + reasoning,
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _fault(
        self, fault: str, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse | None:
        wants_json = (
            bool(body.get("response_format")) or "JSON schema" in body["messages"][-1]["content"]
        )
        if fault in ("malformed", "schema_invalid") and not wants_json:
            return None  # a free-text request has no JSON to break: answer normally
        self._count(fault)
        if fault in ("500", "503", "520"):  # 520: Cloudflare's "unknown error"
            return web.json_response(SERVER_ERROR, status=int(fault))
        if fault == "500_request_id":
            message = OPENAI_SERVER_ERROR.format(uuid.uuid4().hex)
            error = {"message": message, "type": "server_error", "param": None, "code": None}
            return web.json_response({"error": error}, status=500)
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429)
        if fault == "429_retry_after":
            return web.json_response(
                {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "0.2"}
            )
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if fault == "garbage":
            return web.Response(text="<html>upstream proxy error</html>", content_type="text/html")
        if fault == "malformed":
            return self._completion(body, '{"this is": not json at all', "stop")
        if fault == "schema_invalid":
            return self._completion(body, '{"unexpected": true}', "stop")
        if fault == "length":  # the real reply, cut off mid-way by the token limit
            content = self.replier(body)
            if not isinstance(content, str):
                content = orjson.dumps(content).decode()
            return self._completion(body, content[: max(1, len(content) // 2)], "length")
        if fault == "empty":
            return self._completion(body, "", "stop")
        return None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            # A stopped server cancels what is still in its handlers after half a second
            # (aiohttp would wait a minute for a request held by a long latency).
            self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            left = asyncio.all_tasks(loop)  # handlers the shutdown timeout gave up on
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); connections are refused afterwards."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fixed-reply", default=None, help="always answer this content")
    args = parser.parse_args()
    server = FakeServer(latency_s=args.latency, port=args.port)
    if args.fixed_reply is not None:
        server.fixed_reply = fixed_completion(args.fixed_reply)
    web.run_app(server.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
