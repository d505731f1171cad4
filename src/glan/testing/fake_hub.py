"""A fake Hugging Face hub at the HTTP layer: huggingface_hub's real upload code runs against it.

Install with `FakeHub().install()` (huggingface_hub.set_client_factory with a mock transport);
commits are decoded so tests can see which files were uploaded with what content.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field


@dataclass
class FakeHub:
    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

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
        if "/commit/" in path:
            for line in request.content.decode().splitlines():
                entry = json.loads(line)
                if entry.get("key") == "file":
                    value = entry["value"]
                    self.files[value["path"]] = base64.b64decode(value["content"])
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
