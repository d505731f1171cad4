"""Failure kinds a backend reports, so that admission can treat each the right way."""

from __future__ import annotations

from glan.errors import UserError


class TransientError(Exception):
    """Worth retrying with backoff: 5xx, timeouts, dropped connections, garbled bodies.

    `signature` names a hard error the endpoint answered (status and error text of a 500, say),
    so that a body that keeps meeting it can be told from chance (glan.llm.bodyfaults); None
    for failures that say nothing about the body (timeouts, resets, gateway errors).
    """

    def __init__(self, message: str, signature: str | None = None) -> None:
        super().__init__(message)
        self.signature = signature


class RateLimited(Exception):
    """HTTP 429, or 503 with Retry-After: the endpoint answering "later". Handled by adaptive
    concurrency and pauses, never counted as a failure."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EndpointFatal(UserError):
    """The endpoint refuses for a reason retrying cannot fix (401, 403, unknown model, bad URL)."""


class EndpointDown(UserError):
    """The circuit breaker opened: the endpoint kept failing for longer than allowed."""


class RequestFailed(Exception):
    """One request gave up; the run goes on without it.

    `permanent`: the request itself is the problem (no usable reply after re-asks, a 400), so
    asking it again later is pointless; otherwise the endpoint was (transiently) failing, and a
    later run may ask it again."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class BadRequest(Exception):
    """HTTP 400/413/422 for this one request (too long a prompt, say): not retried, not fatal."""
