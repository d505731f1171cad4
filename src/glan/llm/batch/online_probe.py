"""Before an OpenAI or Azure run's first batch: what the model refuses, asked online in seconds.

OpenAI names one refused thing per 400, so a reasoning model with strict schemas refuses a
batch line five times (max_tokens, top_p, temperature, then two schema keywords), and learnt
from batch lines alone that costs five turnarounds of up to 24 hours. One tiny online request
carrying every parameter and schema keyword glan's lines carry is refused the same way, in
seconds: the endpoint's BodyShape learns each refusal before any line is built. The probe's
reply is at most 16 tokens at the online price (well under a cent; not counted in the run's
usage). It never stops a run: a deployment that serves no online requests (Azure GlobalBatch),
a network error, or any other answer ends the probe, and the batch lines learn as before.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from glan.llm.openai_http import chat_body
from glan.llm.refusals import MAX_ADAPTATIONS, read_refusal
from glan.llm.types import ChatRequest, user

if TYPE_CHECKING:
    from glan.llm.batch.openai_batch import OpenAIBatchAPI

#: Every keyword the stage schemas send (glan.llm.wire): refused ones are learnt here.
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "word": {"type": "string", "minLength": 1, "maxLength": 20},
        "words": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "level": {"enum": ["low", "high"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["word", "words", "level", "score"],
}
PROBE_TOKENS = 16


async def learn_refusals(api: OpenAIBatchAPI) -> None:
    """Send the probe until the model takes it (or answers anything but a refusal the shape
    can learn from); each refusal changes what every later line carries."""
    request = ChatRequest(
        messages=user('Reply with a small JSON object: {"word": "ok", ...}.'),
        json_schema=PROBE_SCHEMA,
        schema_name="probe",
        max_tokens=PROBE_TOKENS,
        temperature=0.7,  # a non-default value, as the stages send: refused where they are
        top_p=0.95,
    )
    azure = api.kind == "azure"
    path = f"/deployments/{api.model}/chat/completions" if azure else "/chat/completions"
    for _ in range(MAX_ADAPTATIONS):
        built_at = api.shape.version
        body = chat_body(api.model, request, api.schema_mode, api.shape)  # type: ignore[arg-type]
        if api.shape.token_limit is not None:  # no reasoning headroom: 16 tokens in all
            body[api.shape.token_limit] = PROBE_TOKENS
        status, raw = await _post(api, path, body)
        if status not in (400, 422):
            return
        refusal = read_refusal(raw)
        learnt = len(api.shape.changes)
        if refusal.kind == "other" or not api.shape.adapt(refusal, built_at):
            return
        for change in api.shape.changes[learnt:]:
            change["learnt"] = "online probe before the first batch"


async def _post(api: OpenAIBatchAPI, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """(status, body) of one try; (0, b"") when the request did not complete."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
        async with api._client().post(
            api._url(path),
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            return resp.status, await resp.read()
    return 0, b""
