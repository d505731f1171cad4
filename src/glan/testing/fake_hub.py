"""A fake Hugging Face hub at the HTTP layer: huggingface_hub's real upload code runs against it.

Install with `FakeHub().install()` (huggingface_hub.set_client_factory with a mock transport);
commits are decoded so tests can see which files were uploaded with what content. The repo's
file tree is served (git blob ids, as the hub gives for non-LFS files), so resumable uploads can
be tested; `fail_after_commits` makes later commits fail as a dropped connection would.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


@dataclass
class FakeHub:
    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[list[str]] = field(default_factory=list)  # paths added or deleted, per commit
    fail_after_commits: int | None = None

    def handle(self, request):
        import httpx2 as httpx

        path = request.url.path
        self.requests.append((request.method, path))
        if path.endswith("/repos/create"):
            body = json.loads(request.content)
            self.created.append(body)
            repo = f"{body.get('organization') or 'user'}/{body['name']}"
            return httpx.Response(200, json={"url": f"https://huggingface.co/datasets/{repo}"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            modes = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            return httpx.Response(200, json={"files": modes})
        if "/tree/" in path:
            tree = [
                {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
                for name, data in sorted(self.files.items())
            ]
            return httpx.Response(200, json=tree)
        if "/commit/" in path:
            if self.fail_after_commits is not None and len(self.commits) >= self.fail_after_commits:
                return httpx.Response(400, json={"error": "connection reset by the fake hub"})
            touched = []
            for line in request.content.decode().splitlines():
                entry = json.loads(line)
                if entry.get("key") == "file":
                    value = entry["value"]
                    self.files[value["path"]] = base64.b64decode(value["content"])
                    touched.append(value["path"])
                elif entry.get("key") == "deletedFile":
                    self.files.pop(entry["value"]["path"], None)
                    touched.append("-" + entry["value"]["path"])
            self.commits.append(touched)
            repo = path.split("/api/datasets/", 1)[-1].split("/commit/", 1)[0]
            oid = "0" * 40
            url = f"https://huggingface.co/datasets/{repo}/commit/{oid}"
            return httpx.Response(200, json={"commitUrl": url, "commitOid": oid})
        return httpx.Response(200, json={})

    def install(self) -> None:
        import httpx2 as httpx
        import huggingface_hub
        from huggingface_hub.utils import _http

        self._previous = _http._GLOBAL_CLIENT_FACTORY
        huggingface_hub.set_client_factory(
            lambda: httpx.Client(transport=httpx.MockTransport(self.handle))
        )

    def uninstall(self) -> None:
        import huggingface_hub

        huggingface_hub.set_client_factory(self._previous)
