"""Any OpenAI-compatible chat-completions endpoint over one pooled aiohttp session.

aiohttp was chosen by measurement (BENCHMARKS.md): at 256 connections on one core its client
path costs a fraction of httpx's or the openai SDK's CPU per request.

Structured output (json_schema, else json_object, else the schema in the prompt): a body the
server refuses a mode for goes again alone at the next mode, and the first refusal of a mode
sends one minimal probe with that mode. Only when the probe is refused too (the server lacks
the mode) does the whole endpoint step down; a body that breaks the grammar engine (a crash
this project has met), or a schema too large for it, never costs other requests their
constraint. Which mode a body is sent with is then a function of the server's answers alone,
never of timing or concurrency (a server that lacks a mode refuses every body, before or after
the step down). Each step down and each body's fallback is recorded for the manifest.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from typing import Any, Literal

import aiohttp
import orjson

from glan.llm.backend import Backend, Completion
from glan.llm.errors import BadRequest, EndpointFatal, RateLimited, TransientError
from glan.llm.refusals import MAX_ADAPTATIONS, BodyShape, Refusal, read_refusal
from glan.llm.signatures import error_signature
from glan.llm.types import ChatRequest, user
from glan.llm.wire import described, strict_schema, wire_schema

SchemaMode = Literal["strict", "json_schema", "json_object", "prompt"]
_DOWNGRADE: dict[str, SchemaMode] = {
    "strict": "json_schema",
    "json_schema": "json_object",
    "json_object": "prompt",
}
# A gateway's errors (a proxy's 502/503/504, Cloudflare's 520-527: the origin down, timed
# out, unreachable, its TLS refused): they say nothing of the body they answered.
_GATEWAY_STATUSES = frozenset({502, 503, 504, *range(520, 528)})
SCHEMA_WORDS = ("response_format", "json_schema", "json_object", "schema", "grammar", "guided")


class _SchemaRejected(Exception):
    """The server refused the response_format we sent."""


class _Refused(Exception):
    """The server refused a parameter or schema keyword the endpoint's BodyShape can change."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


# The minimal structured request that tells "the server lacks this mode" from "this body or
# schema breaks its grammar engine".
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}


def schema_instructions(schema: dict[str, Any]) -> str:
    return (
        "\n\nReply with only a JSON value, no prose and no code fence, matching this JSON schema:\n"
        + orjson.dumps(schema).decode()
    )


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or retry-after-ms, if present."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def chat_body(
    model: str, request: ChatRequest, schema_mode: SchemaMode, shape: BodyShape | None = None
) -> dict[str, Any]:
    """The chat-completions body of a request (also one line of an OpenAI batch file), as the
    endpoint takes it (`shape`: its token limit's name, the parameters and keywords it refuses).

    `strict` sends OpenAI's strict structured output (constrained decoding) when the schema
    qualifies (every key required), else the same as `json_schema`: a schema the server may
    only follow as a hint."""
    shape = shape or _PLAIN
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "seed": request.effective_seed,
    }
    if request.json_schema is not None:
        strict = None
        if schema_mode == "strict":
            strict = strict_schema(request.json_schema, shape.refused_keywords)
        # What grammar engines can compile, less what this endpoint refused.
        schema = strict or wire_schema(request.json_schema)
        if strict is None and shape.refused_keywords:
            schema = described(schema, shape.refused_keywords)
        if schema_mode in ("strict", "json_schema"):
            format_: dict[str, Any] = {"name": request.schema_name, "schema": schema}
            if strict is not None:
                format_["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": format_}
        else:
            if schema_mode == "json_object":
                # llama.cpp servers constrain to the schema given here; others ignore it.
                body["response_format"] = {"type": "json_object", "schema": schema}
            last = messages[-1]
            messages[-1] = {**last, "content": last["content"] + schema_instructions(schema)}
    return shape.apply(body, request.reasoning_headroom)


_PLAIN = BodyShape()  # never adapted: what a server that refuses nothing takes


class OpenAIBackend(Backend):
    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 120.0,
        schema_mode: SchemaMode = "strict",
        reasoning_headroom: int = 0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EndpointFatal(
                f"invalid base URL {base_url!r}: it must start with http:// or https://"
            )
        self._model = model
        # What this endpoint and model take, learnt from their refusals (glan.llm.refusals).
        self.shape = BodyShape(reasoning_headroom=reasoning_headroom)
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.schema_mode: SchemaMode = schema_mode  # the endpoint's mode now
        self._probes: dict[SchemaMode, asyncio.Future[bool]] = {}  # mode -> server lacks it
        self._changes: list[dict[str, Any]] = []  # endpoint step downs
        self._fallbacks: dict[tuple[str, SchemaMode], dict[str, Any]] = {}  # bodies alone
        self._headers = {"Content-Type": "application/json"}
        key = self._read_key(api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def _read_key(api_key_env: str | None) -> str | None:
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise EndpointFatal(f"environment variable {api_key_env} (the API key) is not set")
            return key
        # No variable named: use the conventional one if present, else send no key (local servers).
        return os.environ.get("OPENAI_API_KEY") or None

    @property
    def model(self) -> str:
        return self._model

    @property
    def endpoint_id(self) -> str:
        return f"openai|{self.base_url}|{self._model}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_concurrency, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self._headers,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def preflight(self) -> None:
        url = f"{self.base_url}/models"
        try:
            async with self._client().get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                status = resp.status
                await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EndpointFatal(f"cannot reach {self.base_url}: {_describe(exc)}") from None
        if status in (401, 403):
            raise EndpointFatal(f"{self.base_url} refused the API key (HTTP {status})")

    def mode_for(self, schema: dict[str, Any]) -> SchemaMode:
        """The structured-output mode a body with this schema is first sent with."""
        return self.schema_mode

    def structured_output_changes(self) -> list[dict[str, Any]]:
        return [*self._changes, *self._fallbacks.values()]

    def parameter_changes(self) -> list[dict[str, Any]]:
        return list(self.shape.changes)

    async def _server_lacks(self, mode: SchemaMode) -> bool:
        """Whether the server refuses `mode` for a minimal probe too (asked once per mode;
        a probe that fails for another reason decides nothing and is asked again later)."""
        probe = self._probes.get(mode)
        if probe is None:
            probe = self._probes[mode] = asyncio.get_running_loop().create_future()
            request = ChatRequest(
                messages=user('Reply with the JSON {"ok": true}.'),
                json_schema=PROBE_SCHEMA,
                schema_name="probe",
                max_tokens=16,
                temperature=0.0,
            )
            try:
                await self._send(request, mode)
                probe.set_result(False)
            except _SchemaRejected:
                probe.set_result(True)
            except Exception:
                del self._probes[mode]
                probe.set_result(False)
        return await asyncio.shield(probe)

    async def _refused(self, request: ChatRequest, mode: SchemaMode, detail: str) -> None:
        """A body was refused `mode`: step the endpoint down when the server lacks the mode,
        else note this body's fallback."""
        lower = _DOWNGRADE[mode]
        if await self._server_lacks(mode):
            if self.schema_mode == mode:
                self.schema_mode = lower
                self._changes.append(
                    {
                        "scope": "endpoint",
                        "from": mode,
                        "to": lower,
                        "at": time.time(),
                        "why": f"refused for a minimal probe too: {detail[:200]}",
                    }
                )
            return
        note = self._fallbacks.setdefault(
            (request.schema_name, mode),
            {
                "scope": "request",
                "schema": request.schema_name,
                "from": mode,
                "to": lower,
                "requests": 0,
                "at": time.time(),
            },
        )
        note["requests"] += 1
        note["why"] = f"refused for these bodies only (a minimal probe passed): {detail[:200]}"

    def _body(self, request: ChatRequest, mode: SchemaMode | None = None) -> dict[str, Any]:
        return chat_body(self._model, request, mode or self.schema_mode, self.shape)

    async def _send(self, request: ChatRequest, mode: SchemaMode | None) -> Completion:
        """One request, sent again as the endpoint takes it after each refusal of a parameter
        or schema keyword (never counted as a failure: the model refuses it for every body)."""
        for _ in range(MAX_ADAPTATIONS):
            built_at = self.shape.version
            try:
                return await self._post(request, mode)
            except _Refused as exc:
                if self.shape.adapt(exc.refusal, built_at):
                    continue
                if exc.refusal.kind == "keyword":  # described already, still refused: the form
                    raise _SchemaRejected(exc.refusal.detail) from None
                raise BadRequest(f"HTTP 400: {exc.refusal.detail}") from None
        raise BadRequest(f"refused after {MAX_ADAPTATIONS} changes of what is sent")

    async def complete(self, request: ChatRequest) -> Completion:
        mode = None if request.json_schema is None else self.schema_mode
        while True:
            try:
                return await self._send(request, mode)
            except _SchemaRejected as exc:
                assert mode is not None and mode != "prompt"
                await self._refused(request, mode, str(exc))
                # This body goes again at the next mode, whether or not the endpoint stepped
                # down: one body breaking the grammar is answered without it.
                mode = _DOWNGRADE[mode]

    async def _post(self, request: ChatRequest, mode: SchemaMode | None) -> Completion:
        url = f"{self.base_url}/chat/completions"
        body = orjson.dumps(self._body(request, mode))
        try:
            async with self._client().post(url, data=body) as resp:
                status = resp.status
                raw = await resp.read()
                headers = resp.headers
        except TimeoutError:
            raise TransientError(f"timed out after {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientError(_describe(exc)) from None
        if status == 200:
            return _parse_completion(raw)
        if status in (400, 422):
            refusal = read_refusal(raw)
            # A keyword is the strict schema's to change; a parameter the endpoint's.
            if refusal.kind == "param" or (refusal.kind == "keyword" and mode is not None):
                raise _Refused(refusal)
        detail = raw[:300].decode("utf-8", "replace")
        if (
            mode is not None
            and mode != "prompt"
            and status not in (401, 403, 404, 429)
            and any(word in detail.lower() for word in SCHEMA_WORDS)
        ):
            # Some servers answer 400, others 500 (llama-cpp-python's), when they lack the mode.
            raise _SchemaRejected(detail)
        retry_after = parse_retry_after(headers)
        if status == 429 and "request too large" in detail.lower():
            # OpenAI/Azure: this one body is larger than the per-minute token limit; waiting
            # never lets it through, and it must not pause and cut everyone else.
            raise BadRequest(f"HTTP 429: {detail}")
        if status == 429 or (status == 503 and retry_after is not None):
            # The endpoint answering "later" (a 503 with Retry-After is a 429 by another name).
            raise RateLimited(f"HTTP {status}: {detail}", retry_after)
        if status in (401, 403):
            raise EndpointFatal(f"{self.base_url} refused the API key (HTTP {status}): {detail}")
        if status == 404:
            raise EndpointFatal(
                f"model {self._model!r} or path not found at {self.base_url} (HTTP 404): {detail}"
            )
        if status in (400, 413, 422):
            raise BadRequest(f"HTTP {status}: {detail}")
        # A gateway's or an overloaded server's error says nothing about this body; any other
        # error status (500 above all) may be the body's own, recognisable when it repeats.
        hard = status >= 500 and status not in _GATEWAY_STATUSES
        signature = error_signature(status, raw) if hard else None
        raise TransientError(f"HTTP {status}: {detail}", signature)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def completion_from(data: Any) -> Completion:
    """A chat completion's text, finish reason and tokens (KeyError etc. when it is not one)."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    usage = data.get("usage") or {}
    return Completion(
        text if isinstance(text, str) else str(text),
        choice.get("finish_reason"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


NOT_A_COMPLETION = (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError)


def _parse_completion(raw: bytes) -> Completion:
    try:
        return completion_from(orjson.loads(raw))
    except NOT_A_COMPLETION:
        snippet = raw[:120].decode("utf-8", "replace")
        raise TransientError(
            f"the server's reply is not an OpenAI chat completion: {snippet!r}"
        ) from None
