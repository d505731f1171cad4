"""What every request to the review passes before the app sees it: the Host check and the body cap.

DNS rebinding: a page on a name the attacker controls can re-point that name at 127.0.0.1 and
then talk to the review from the reviewer's own browser; its requests carry the attacker's name
in `Host`. So a request is served only when its Host is the address the app is bound to (for a
loopback bind: 127.0.0.1, localhost or ::1; for a wildcard bind: any IP literal, which no
rebinding attack can produce) on the bound port, or a name given with --allow-host (any port:
a TLS proxy in front usually forwards its own public name).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse

from glan.errors import UserError

MAX_BODY = 16 * 1024
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WILDCARD = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class ServeOptions:
    """How the app is served: where, who may use it, and over what."""

    host: str = "127.0.0.1"
    port: int = 8765
    allow_hosts: tuple[str, ...] = ()
    token: str | None = None  # the shared token of the open mode
    per_reviewer: bool = False  # each reviewer their own link (glan.review.links)
    tls_proxy: bool = False  # served behind a TLS proxy: cookies are Secure

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def split_host(header: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or a bare name -> (name, port or None)."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif header.count(":") == 1:
        name, _, port = header.partition(":")
    else:
        name, port = header, ""
    return name.rstrip("."), int(port) if port.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str, options: ServeOptions) -> bool:
    name, port = split_host(header)
    if not name:
        return False
    if name in {h.lower().rstrip(".") for h in options.allow_hosts}:
        return True
    if (port or 80) != options.port:
        return False
    bound = options.host.lower()
    if bound in LOOPBACK or bound.startswith("127."):
        return name in LOOPBACK or name == bound
    if bound in WILDCARD:
        return _is_ip(name) or name == "localhost"
    return name == bound


class Guard:
    """ASGI middleware: refuse a foreign Host (400) and any body over `limit` bytes (413)."""

    def __init__(self, app, options: ServeOptions, limit: int = MAX_BODY) -> None:
        self.app, self.options, self.limit = app, options, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.options):
            message = (
                f"Host {host!r} is not where this review is served (a guard against DNS "
                "rebinding): open it by its address, or start it with --allow-host NAME"
            )
            return await PlainTextResponse(message, 400)(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and int(declared) > self.limit:
            return await PlainTextResponse("request body too large", 413)(scope, receive, send)
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # a streamed body: the app's exception handling answers 413
                raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, capped, send)


def check_bind(host: str, token: str | None, per_reviewer: bool = False) -> None:
    if host not in LOOPBACK and not token and not per_reviewer:
        raise UserError(
            f"binding {host} opens the review to the network: give each reviewer a link "
            "(--reviewers NAMES) or pass --token-env VAR naming an env variable that holds a "
            "shared secret"
        )
