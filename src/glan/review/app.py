"""The review web app: one page (tree + detail), a JSON state, small POST endpoints.

Every POST needs the reviewer's name (cookie), the token when one is set, and the header
`X-Glan-Review: 1` (a custom header a foreign page cannot send without CORS, so other sites
cannot vote through a reviewer's browser). Bodies are capped; all text is escaped on display.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from importlib import resources
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from glan.errors import UserError
from glan.review.export import review_taxonomy
from glan.review.rules import rules_text, summary, tree_view
from glan.review.store import ReviewStore

MAX_BODY = 16 * 1024
MAX_NAME, MAX_NODE_NAME, MAX_NOTE = 40, 120, 2000
NAME_COOKIE, TOKEN_COOKIE = "glan_reviewer", "glan_review_token"
_PKG = resources.files("glan.review")


class BodyLimit:
    """Refuse any request body over `limit` bytes (declared or streamed) with 413."""

    def __init__(self, app, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
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


def create_app(store: ReviewStore, quorum: int = 0, token: str | None = None) -> Starlette:
    templates = Jinja2Templates(directory=str(_PKG / "templates"))

    def reviewer(request: Request) -> str | None:
        name = unquote(request.cookies.get(NAME_COOKIE, "")).strip()
        return name[:MAX_NAME] or None

    def token_ok(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(given.encode(), token.encode())

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status)

    async def guarded_form(request: Request) -> tuple[str, dict] | JSONResponse:
        if not token_ok(request):
            return refuse(403, "missing or wrong review token: open the URL with ?token=...")
        if request.headers.get("x-glan-review") != "1":
            return refuse(403, "requests must come from the review page")
        name = reviewer(request)
        if name is None:
            return refuse(401, "enter your name first")
        form = await request.form()
        return name, {k: str(v) for k, v in form.items()}

    def state_json() -> dict:
        views = tree_view(store.snapshot(), quorum)
        nodes = []
        for v in views.values():
            d = asdict(v)
            d["tally"] = asdict(v.tally)
            d["proposal"] = v.proposal
            nodes.append(d)
        return {"nodes": nodes, "summary": summary(views), "quorum": quorum}

    async def index(request: Request) -> Response:
        if not token_ok(request):
            return PlainTextResponse(
                "missing or wrong review token: open the URL you were given", 403
            )
        if token is not None and "token" in request.query_params:
            response = RedirectResponse("/", 303)  # keep the token out of the address bar
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        return templates.TemplateResponse(
            request,
            "review.html",
            {
                "reviewer": reviewer(request) or "",
                "rules": rules_text(quorum),
                "max_note": MAX_NOTE,
                "max_name": MAX_NAME,
            },
        )

    async def state(request: Request) -> Response:
        if not token_ok(request):
            return refuse(403, "missing or wrong review token")
        return JSONResponse(state_json())

    async def set_name(request: Request) -> Response:
        if not token_ok(request) or request.headers.get("x-glan-review") != "1":
            return refuse(403, "missing or wrong review token")
        name = str((await request.form()).get("name", "")).strip()
        if not name or len(name) > MAX_NAME:
            return refuse(400, f"a name is 1 to {MAX_NAME} characters")
        response = JSONResponse({"name": name})
        response.set_cookie(
            NAME_COOKIE, quote(name), max_age=60 * 86400, httponly=True, samesite="strict"
        )
        return response

    def write(action):
        async def endpoint(request: Request) -> Response:
            got = await guarded_form(request)
            if isinstance(got, JSONResponse):
                return got
            name, form = got
            try:
                action(name, form)
            except UserError as exc:
                return refuse(400, str(exc))
            return JSONResponse(state_json())

        return endpoint

    def text(form: dict, key: str, limit: int, required: bool = True) -> str:
        value = form.get(key, "").strip()
        if required and not value:
            raise UserError(f"{key} is required")
        if len(value) > limit:
            raise UserError(f"{key} is longer than {limit} characters")
        return value

    def vote(name: str, form: dict) -> None:
        choice = form.get("vote", "")
        store.vote(
            text(form, "target", 40),
            name,
            None if choice == "clear" else choice,
            text(form, "note", MAX_NOTE, required=False),
        )

    def propose(name: str, form: dict) -> None:
        parent = form.get("parent") or None
        store.propose_node(
            parent,
            text(form, "name", MAX_NODE_NAME),
            name,
            text(form, "description", MAX_NOTE, required=False) or None,
        )

    def rename(name: str, form: dict) -> None:
        store.propose_rename(text(form, "target", 40), text(form, "name", MAX_NODE_NAME), name)

    async def activity(request: Request) -> Response:
        if not token_ok(request):
            return refuse(403, "missing or wrong review token")
        return JSONResponse({"events": [asdict(e) for e in store.events(300)]})

    async def export(request: Request) -> Response:
        if not token_ok(request):
            return refuse(403, "missing or wrong review token")
        yaml_text = review_taxonomy(tree_view(store.snapshot(), quorum)).to_yaml()
        return PlainTextResponse(
            yaml_text,
            media_type="application/x-yaml",
            headers={"Content-Disposition": 'attachment; filename="reviewed.yaml"'},
        )

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/activity", activity),
            Route("/api/name", set_name, methods=["POST"]),
            Route("/api/vote", write(vote), methods=["POST"]),
            Route("/api/propose", write(propose), methods=["POST"]),
            Route("/api/rename", write(rename), methods=["POST"]),
            Route("/export.yaml", export),
            Mount("/static", StaticFiles(directory=str(_PKG / "static")), name="static"),
        ]
    )
    return BodyLimit(app)  # type: ignore[return-value]


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_bind(host: str, token: str | None) -> None:
    if host not in LOOPBACK and not token:
        raise UserError(
            f"binding {host} opens the review to the network: pass --token-env VAR "
            "naming an env variable that holds a shared secret"
        )
