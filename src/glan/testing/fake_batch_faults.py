"""Faults the fake batch servers (glan.testing.fake_batch) can be told to show, each as the
provider answers it: the enqueued-token quota (Azure's "fail fast" at create, OpenAI's failed
batch), Anthropic's processing queue full (429 at create), Azure's file quota at upload, a
batch's status refused, result downloads that answer 404, are cut off mid-stream or come
slowly, a finished batch offering no result file, results gone for good (a lapsed file, an
archived Anthropic batch), a provider refusing the expiry fields, and the variants Azure's
examples show (an ISO `created_at`, capitalised statuses)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# What Azure answers (HTTP 400) in the regions with "fail fast" batch quota, and when the
# resource holds its limit of files without expiry.
QUOTA_AT_CREATE = {
    "code": "token_limit_exceeded",
    "message": "Enqueued token limit reached for this deployment. Please try again once "
    "the current jobs have finished.",
}
FILE_QUOTA = {
    "code": "quotaExceeded",
    "message": "The quota for files without expiry is reached. The maximum is 500.",
}
QUEUE_FULL = {  # Anthropic (HTTP 429)
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "Number of batch requests in the processing queue exceeds your limit.",
    },
}


def azure_token_limit(limit: int) -> dict[str, Any]:
    """Azure's "fail fast" answer where it states the deployment's limit."""
    message = (
        f"The number of enqueued tokens has surpassed the configured limit of {limit:,} for "
        "the deployment 'batch-deployment'. Please either increase the limit or try again once "
        "the current jobs have finished."
    )
    return {"code": "token_limit_exceeded", "message": message}


def openai_token_limit(limit: int) -> str:
    """Why OpenAI fails a batch after validation for the organisation's enqueued tokens."""
    return (
        f"Enqueued token limit reached for fake-model in organization org-fake. Limit: "
        f"{limit:,} enqueued tokens. Please try again once some in_progress batches have been "
        "completed."
    )


@dataclass
class BatchFaults:
    # Creates are refused (HTTP 400 token_limit_exceeded, no limit stated) when the lines in
    # live batches plus the new batch's would pass this many (OpenAI/Azure shape).
    enqueued_line_limit: int | None = None
    # The enqueued prompt tokens of live batches may not pass this many, stated in the answer:
    # Azure refuses the create; OpenAI creates the batch, then fails it.
    enqueued_token_limit: int | None = None
    # The next N creates (either shape) answer 429 (Anthropic: its processing queue full).
    creates_429: int = 0
    # The next status reads of a batch answer these HTTP codes in turn (a gateway's hiccups).
    status_errors: list[int] = field(default_factory=list)
    # The next N reads of a finished batch offer no result file (OpenAI: output_file_id null
    # although lines completed; Anthropic: results_url null).
    hide_results: int = 0
    # The batches of `lose_results_of` offer no result file ever, instead of a 404.
    lost_unoffered: bool = False
    # Downloads come in pieces this many seconds apart (a large file on a slow link).
    slow_download_s: float = 0.0
    # Uploads are refused (HTTP 400 quotaExceeded) while this many files are held (inputs,
    # outputs and error files not deleted).
    file_limit: int | None = None
    # The next N result downloads answer 404 (the file not there yet, or a hiccup).
    results_404: int = 0
    # The next N result downloads are cut off halfway (the connection dropped mid-stream).
    drop_downloads: int = 0
    # The results of these batches (1: the first to finish) are gone for good (OpenAI/Azure:
    # their output and error files lapsed; Anthropic: the batch archived).
    lose_results_of: set[int] = field(default_factory=set)
    # Every download is cut off, for as long as this is True.
    drop_every_download: bool = False
    # Upload and create refuse `expires_after` / `output_expires_after` (HTTP 400 naming it).
    refuse_expiry: bool = False
    # Batch objects as some Azure examples show them: created_at an ISO string, statuses
    # capitalised ("InProgress", "Completed").
    azure_style: bool = False
    # What was seen: expiry fields sent, quota refusals answered, files deleted.
    expiry_sent: list[tuple[str, Any]] = field(default_factory=list)
    refused_creates: int = 0
    refused_uploads: int = 0
    deleted: list[str] = field(default_factory=list)
    finished: int = 0  # batches finished so far

    def results_lost(self) -> bool:
        """One more batch finished: whether its results are to be gone for good."""
        self.finished += 1
        return self.finished in self.lose_results_of

    def over_tokens(self, live_tokens: int, tokens: int) -> bool:
        limit = self.enqueued_token_limit
        return limit is not None and live_tokens + tokens > limit

    def create_refused(self, live_lines: int, lines: int, over_tokens: bool) -> web.Response | None:
        """`over_tokens`: refused for the token limit (Azure's create)."""
        if self.creates_429 > 0:
            self.creates_429 -= 1
            self.refused_creates += 1
            return web.json_response(QUEUE_FULL, status=429)
        limit = self.enqueued_line_limit
        if over_tokens:
            error = azure_token_limit(self.enqueued_token_limit or 0)
        elif limit is not None and live_lines + lines > limit:
            error = QUOTA_AT_CREATE
        else:
            return None
        self.refused_creates += 1
        return web.json_response({"error": error}, status=400)

    def status_refused(self) -> web.Response | None:
        if not self.status_errors:
            return None
        status = self.status_errors.pop(0)
        return web.json_response({"error": {"message": "Resource not found"}}, status=status)

    def hidden(self, lost: bool) -> bool:
        """Whether this read of a finished batch offers no result file."""
        if lost and self.lost_unoffered:
            return True
        if self.hide_results > 0:
            self.hide_results -= 1
            return True
        return False

    def upload_refused(self, files_held: int) -> web.Response | None:
        if self.file_limit is None or files_held < self.file_limit:
            return None
        self.refused_uploads += 1
        return web.json_response({"error": FILE_QUOTA}, status=400)

    def expiry_refused(self, name: str, value: Any) -> web.Response | None:
        """An expiry field sent: recorded, or refused as a provider without it refuses it."""
        if self.refuse_expiry:
            message = f"Unrecognized request argument supplied: {name}"
            return web.json_response({"error": {"message": message}}, status=400)
        self.expiry_sent.append((name, value))
        return None

    async def serve(self, request: web.Request, data: bytes | None) -> web.StreamResponse:
        """A result download: the bytes, a 404, or half of them and a dropped connection."""
        if data is None or self.results_404 > 0:
            self.results_404 = max(0, self.results_404 - 1)
            return web.json_response({"error": {"message": "No such File object"}}, status=404)
        if self.drop_downloads > 0 or self.drop_every_download:
            self.drop_downloads = max(0, self.drop_downloads - 1)
            response = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()  # the rest never comes
            return response
        if self.slow_download_s:
            response = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await response.prepare(request)
            step = max(1, len(data) // 4)
            for start in range(0, len(data), step):
                await asyncio.sleep(self.slow_download_s)
                await response.write(data[start : start + step])
            await response.write_eof()
            return response
        return web.Response(body=data, content_type="application/octet-stream")


def capitalised(status: str) -> str:
    """ "in_progress" as some Azure examples write it: "InProgress"."""
    return "".join(part.capitalize() for part in status.split("_"))
