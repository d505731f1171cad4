"""What makes two hard errors "the same error" (glan.llm.bodyfaults): the provider's words,
less what differs at every answer.

Providers put a fresh identifier in every error they answer (OpenAI's message ends "include
the request ID req_... in your message"; Anthropic's body carries a `request_id`; vLLM and
proxies name the request or the time; an out-of-memory error names the bytes it wanted). Taken
raw, each try of a body that breaks the server would read as another error and its run of
failures would never grow. So an error is recognised by its status and the parsed error's type,
code and message (glan.llm.refusals.error_object: the raw body's other fields left out), with
identifiers, times and numbers written as placeholders.
"""

from __future__ import annotations

import re

from glan.llm.refusals import error_object

#: How much of an error's normalised text makes its signature.
SIGNATURE_CHARS = 300

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
# A word of 8 characters or more holding a digit: req_8f3a..., chatcmpl-9x..., a hex digest.
_ID = re.compile(r"(?<![\w-])(?=[\w-]*\d)[\w-]{8,}(?![\w-])")
_NUMBER = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def without_ids(text: str) -> str:
    """`text` with identifiers, times and numbers replaced by placeholders."""
    text = _UUID.sub("<id>", text)
    text = _TIME.sub("<time>", text)
    text = _ID.sub("<id>", text)
    text = _NUMBER.sub("#", text)
    return _SPACE.sub(" ", text).strip()[:SIGNATURE_CHARS]


def error_signature(status: int, raw: bytes) -> str:
    """The signature of an HTTP error answer: its status and what its body says (the error
    object's type, code and message when it has one, else its text), ids left out."""
    error = error_object(raw[:4000])
    message = error.get("message")
    if isinstance(message, str) and message:
        kind = "|".join(str(error.get(field) or "") for field in ("type", "code"))
        return f"{status}|{kind}|{without_ids(message)}"
    return f"{status}|{without_ids(raw[:1000].decode('utf-8', 'replace'))}"
