"""The review web app: one page (tree + detail), a JSON state, small POST endpoints.

Two ways to know who votes. Open mode, for one trusted room: each reviewer types a name (kept in
a cookie), and a shared token guards a non-loopback bind. Per-reviewer mode: each reviewer opens
their own private link (glan.review.links) and their votes carry that link's name; nobody types
one. Every POST also needs the header `X-Glan-Review: 1` (a custom header a foreign page cannot
send without CORS, so other sites cannot vote through a reviewer's browser). Bodies are capped
and foreign Host headers refused (glan.review.guard); all text is escaped on display.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass
from importlib import resources
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from glan.errors import UserError
from glan.review.admin import admin_routes
from glan.review.export import review_yaml
from glan.review.guard import MAX_BODY, Guard, ServeOptions, check_bind
from glan.review.links import Links
from glan.review.rules import rules_text, summary, tree_view
from glan.review.store import ReviewStore
from glan.taxonomy import load_taxonomy

__all__ = ["MAX_BODY", "ServeOptions", "check_bind", "create_app"]

MAX_NAME, MAX_NODE_NAME, MAX_NOTE = 40, 120, 2000
NAME_COOKIE, TOKEN_COOKIE = "glan_reviewer", "glan_review_token"
COOKIE_AGE = 60 * 86400
_PKG = resources.files("glan.review")


@dataclass(frozen=True)
class Who:
    name: str | None  # None: open mode, no name entered yet
    admin: bool = False


def create_app(store: ReviewStore, options: ServeOptions | None = None) -> Starlette:
    options = options or ServeOptions()
    templates = Jinja2Templates(directory=str(_PKG / "templates"))
    links = Links(store) if options.per_reviewer else None
    shipped_groups = {f.group for f in load_taxonomy().fields if f.group}

    def set_cookie(response: Response, key: str, value: str) -> None:
        response.set_cookie(
            key,
            value,
            max_age=COOKIE_AGE,
            httponly=True,
            samesite="strict",
            secure=options.tls_proxy,  # behind TLS the browser never sends it in clear
        )

    def identify(request: Request, from_query: bool = False) -> Who | None:
        """Who is asking, or None when the request must be refused (403)."""
        given = request.cookies.get(TOKEN_COOKIE, "")
        if from_query:
            given = request.query_params.get("token") or given
        if links is not None:
            holder = links.holder(given)
            return Who(holder.name, holder.admin) if holder else None
        if options.token is not None and not hmac.compare_digest(
            given.encode(), options.token.encode()
        ):
            return None
        name = unquote(request.cookies.get(NAME_COOKIE, "")).strip()[:MAX_NAME]
        return Who(name or None)

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status)

    denied = (
        "this review link is not valid (revoked, or not one you were given)"
        if links is not None
        else "missing or wrong review token: open the URL you were given"
    )

    async def writer(request: Request) -> tuple[str, dict] | JSONResponse:
        who = identify(request)
        if who is None:
            return refuse(403, denied)
        if request.headers.get("x-glan-review") != "1":
            return refuse(403, "requests must come from the review page")
        if who.name is None:
            return refuse(401, "enter your name first")
        form = await request.form()
        return who.name, {k: str(v) for k, v in form.items()}

    def state_json(who: Who) -> dict:
        quorum = store.quorum()
        views = tree_view(store.snapshot(), quorum)
        nodes = []
        for v in views.values():
            d = asdict(v)
            d["proposal"] = v.proposal
            nodes.append(d)
        groups = shipped_groups | {v.group for v in views.values() if v.group}
        return {
            "nodes": nodes,
            "summary": summary(views),
            "quorum": quorum,
            "groups": sorted(groups),
            "me": who.name,
        }

    async def index(request: Request) -> Response:
        who = identify(request, from_query=True)
        if who is None:
            return PlainTextResponse(denied, 403)
        response = templates.TemplateResponse(
            request,
            "review.html",
            {
                "reviewer": who.name or "",
                "mode": "links" if links is not None else "open",
                "admin": who.admin,
                "rules": rules_text(store.quorum()),
                "max_note": MAX_NOTE,
                "max_name": MAX_NAME,
            },
            headers={"Referrer-Policy": "no-referrer"},
        )
        # The page itself drops ?token= from the address bar: a redirect here would lose the
        # SameSite=Strict cookie when the link was opened from another site (a mail, a chat).
        if "token" in request.query_params and (links is not None or options.token is not None):
            set_cookie(response, TOKEN_COOKIE, request.query_params["token"])
        return response

    async def state(request: Request) -> Response:
        who = identify(request)
        if who is None:
            return refuse(403, denied)
        return JSONResponse(state_json(who))

    async def set_name(request: Request) -> Response:
        who = identify(request)
        if who is None or request.headers.get("x-glan-review") != "1":
            return refuse(403, denied)
        if links is not None:
            return refuse(403, "your name comes with your review link")
        name = str((await request.form()).get("name", "")).strip()
        if not name or len(name) > MAX_NAME:
            return refuse(400, f"a name is 1 to {MAX_NAME} characters")
        response = JSONResponse({"name": name})
        set_cookie(response, NAME_COOKIE, quote(name))
        return response

    def write(action):
        async def endpoint(request: Request) -> Response:
            got = await writer(request)
            if isinstance(got, JSONResponse):
                return got
            name, form = got
            try:
                action(name, form)
            except UserError as exc:
                return refuse(400, str(exc))
            return JSONResponse(state_json(Who(name)))

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

    def regroup(name: str, form: dict) -> None:
        store.propose_group(text(form, "target", 40), text(form, "group", 40), name)

    async def activity(request: Request) -> Response:
        if identify(request) is None:
            return refuse(403, denied)
        return JSONResponse({"events": [asdict(e) for e in store.events(300)]})

    async def export(request: Request) -> Response:
        if identify(request) is None:
            return refuse(403, denied)
        quorum = store.quorum()
        return PlainTextResponse(
            review_yaml(tree_view(store.snapshot(), quorum), quorum),
            media_type="application/x-yaml",
            headers={"Content-Disposition": 'attachment; filename="reviewed.yaml"'},
        )

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/activity", activity),
        Route("/api/name", set_name, methods=["POST"]),
        Route("/api/vote", write(vote), methods=["POST"]),
        Route("/api/propose", write(propose), methods=["POST"]),
        Route("/api/rename", write(rename), methods=["POST"]),
        Route("/api/group", write(regroup), methods=["POST"]),
        Route("/export.yaml", export),
        Mount("/static", StaticFiles(directory=str(_PKG / "static")), name="static"),
    ]
    if links is not None:
        routes += admin_routes(links, templates, lambda r: identify(r))
    return Guard(Starlette(routes=routes), options)  # type: ignore[return-value]
