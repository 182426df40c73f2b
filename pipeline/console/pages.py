"""The console's pages on the API's own origin: one HTML shell for every page, and its static files.

`console_routes()` is added to the API app by `mount()` (called by `roomlogs api serve`). The shell holds
no data and is the same for every room, whether it exists or not: the page's script asks the API, through
the API's access rules and audit, for what the signed-in user may see. Every response carries a strict
Content-Security-Policy (scripts and styles from this origin only, no inline script, no framing).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.console.assets import Asset, load_assets
from pipeline.page_headers import CONTENT_SECURITY_POLICY, PAGE_SECURITY_HEADERS

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "console_routes", "mount"]

SECURITY_HEADERS = PAGE_SECURITY_HEADERS


def console_routes() -> list[BaseRoute]:
    assets = load_assets()
    shell = assets["index.html"]

    async def page(request: Request) -> Response:
        return _send(request, shell)

    async def static(request: Request) -> Response:
        asset = assets.get(str(request.path_params["path"]))
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
        return _send(request, asset)

    async def root(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=308, headers=SECURITY_HEADERS)

    return [
        Route("/console", root, methods=["GET"]),
        Route("/console/static/{path:path}", static, methods=["GET", "HEAD"]),
        Route("/console/{page:path}", page, methods=["GET", "HEAD"]),
    ]


def mount(app: Starlette) -> Starlette:
    """Serve the console from `app` (the query API's app): same origin, same access rules."""
    app.router.routes.extend(console_routes())
    return app


def _send(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
