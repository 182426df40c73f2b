"""Headers every /v1 answer carries: nothing that holds log data or session state is cached or sniffed.

`PrivateAnswers` is ASGI middleware, the outermost of the query API's app (`create_app` installs it), so it
also covers the gate's own error answers and any route added to `route_table.ROUTES` later: every answer
under /v1/ gets ``Cache-Control: no-store`` (not kept by the browser, a shared cache or a proxy) and
``X-Content-Type-Options: nosniff`` (read only as the type it declares). A handler's own Cache-Control is
replaced, except ``public, ...``: what a public route (`RouteSpec.public`, no log: the seal keys) says
anyone may cache. Answers outside /v1/ pass untouched (the console's static files set their own,
cacheable with revalidation; /metrics, /healthz and /openapi.json hold no log data).

`PAGE_SECURITY_HEADERS` (from pipeline.page_headers, shared with the console) is what the API's own pages
for a person's browser carry (a refused single sign-on, `error_pages`).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.page_headers import CONTENT_SECURITY_POLICY, PAGE_SECURITY_HEADERS

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_SECURITY_HEADERS", "PRIVATE_ANSWER_HEADERS", "PrivateAnswers"]

#: What every /v1 answer carries.
PRIVATE_ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PREFIX = "/v1/"


class PrivateAnswers:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _route_path(scope).startswith(_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if not headers.get("cache-control", "").startswith("public"):
                    headers["Cache-Control"] = PRIVATE_ANSWER_HEADERS["Cache-Control"]
                headers["X-Content-Type-Options"] = PRIVATE_ANSWER_HEADERS["X-Content-Type-Options"]
            await send(message)

        await self.app(scope, receive, send_private)


def _route_path(scope: Scope) -> str:
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path
