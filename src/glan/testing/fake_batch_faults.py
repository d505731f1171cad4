"""Faults the fake batch servers (glan.testing.fake_batch) can be told to show, each as the
provider answers it: Azure's "fail fast" quota at create, Azure's file quota at upload, result
downloads that answer 404 or are cut off mid-stream, results gone for good (a lapsed file, an
archived Anthropic batch), a provider refusing the expiry fields, and the variants Azure's
examples show (an ISO `created_at`, capitalised statuses)."""

from __future__ import annotations

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


@dataclass
class BatchFaults:
    # Creates are refused (HTTP 400 token_limit_exceeded) when the lines in live batches plus
    # the new batch's would pass this many (OpenAI/Azure shape).
    enqueued_line_limit: int | None = None
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

    def create_refused(self, live_lines: int, lines: int) -> web.Response | None:
        limit = self.enqueued_line_limit
        if limit is None or live_lines + lines <= limit:
            return None
        self.refused_creates += 1
        return web.json_response({"error": QUOTA_AT_CREATE}, status=400)

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
        return web.Response(body=data, content_type="application/octet-stream")


def capitalised(status: str) -> str:
    """ "in_progress" as some Azure examples write it: "InProgress"."""
    return "".join(part.capitalize() for part in status.split("_"))
