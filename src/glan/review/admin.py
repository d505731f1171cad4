"""The admin's page: add a reviewer (a new private link, shown once) or revoke one, while it runs.

Only the holder of the admin link (printed when the review started) reaches these routes; every
POST also needs the page's `X-Glan-Review` header, like the votes.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from glan.errors import UserError
from glan.review.links import Links


def admin_routes(links: Links, templates, identify: Callable) -> list[Route]:
    def is_admin(request: Request) -> bool:
        who = identify(request)
        return who is not None and who.admin

    def reviewers() -> dict:
        return {
            "reviewers": [
                {"name": r.name, "role": r.role, "issued_at": r.issued_at, "live": r.live}
                for r in links.reviewers()
            ]
        }

    async def page(request: Request) -> Response:
        if not is_admin(request):
            return PlainTextResponse("only the admin link opens this page", 403)
        return templates.TemplateResponse(
            request, "admin.html", {}, headers={"Referrer-Policy": "no-referrer"}
        )

    async def listing(request: Request) -> Response:
        if not is_admin(request):
            return JSONResponse({"error": "only the admin may list reviewers"}, 403)
        return JSONResponse(reviewers())

    def change(action: Callable[[str], dict]):
        async def endpoint(request: Request) -> Response:
            if not is_admin(request) or request.headers.get("x-glan-review") != "1":
                return JSONResponse({"error": "only the admin may do that"}, 403)
            name = str((await request.form()).get("name", ""))
            try:
                extra = action(name)
            except UserError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            return JSONResponse({**reviewers(), **extra})

        return endpoint

    def add(name: str) -> dict:
        # The token goes back once, to the admin's page, which shows the link to hand over.
        return {"added": name.strip(), "token": links.issue(name)}

    def revoke(name: str) -> dict:
        links.revoke(name)
        return {"revoked": name}

    return [
        Route("/admin", page),
        Route("/api/admin/reviewers", listing),
        Route("/api/admin/add", change(add), methods=["POST"]),
        Route("/api/admin/revoke", change(revoke), methods=["POST"]),
    ]
