"""Every /v1 answer is private: `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.

Walks the route table (`pipeline.api.route_table.ROUTES`), so a route added later is checked without
anyone remembering to: each route is asked once with the room owner's console session, and the answer,
a success or a refusal, must carry both headers.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from api_world import World, bearer

from pipeline.api.route_table import ROUTES
from pipeline.api.security.headers import PRIVATE_ANSWER_HEADERS

#: Answers the issue names (log data and session state): they must succeed here, not only be refused.
_MUST_SUCCEED = {
    "rooms.mine",
    "events.list",
    "events.get",
    "events.context",
    "days",
    "insights",
    "access_log.read",
    "retention.read",
    "session.info",
}
#: State changes go last (unsent CSRF token: refused, nothing changes), and signing out last of all.
_LAST = {"POST": 1, "PUT": 1, "DELETE": 2}


async def test_every_route_answers_no_store_and_nosniff(app_factory: Any, small_world: World) -> None:
    client, _ = await app_factory(small_world, session_cookie_secure=False)
    signed_in = await client.post("/v1/session", headers=bearer("u-owner"))
    assert signed_in.status_code == 201, signed_in.text
    [event_id] = [
        str(r["event_id"])
        for r in await small_world.fetch("SELECT event_id FROM events WHERE room_id = 'room-a' LIMIT 1")
    ]
    values = {"room_id": "room-a", "event_id": event_id, "user_id": "u-chat"}
    asked = []
    for spec in sorted(ROUTES, key=lambda s: _LAST.get(s.method, 0)):
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], spec.path)
        answer = await _ask(client, spec.method, path)
        for name, value in PRIVATE_ANSWER_HEADERS.items():
            if spec.public and name == "Cache-Control" and answer.headers[name].startswith("public"):
                continue  # no log (the seal keys): anyone may cache them
            assert answer.headers.get(name) == value, (spec.method, spec.path, answer.status_code, name)
        if spec.action in _MUST_SUCCEED:
            assert answer.status_code == 200, (spec.path, answer.text)
        asked.append(spec.action)
    assert set(asked) >= _MUST_SUCCEED
    # refusals too: no session, an unknown route
    client.cookies.clear()
    for answer in (await client.get("/v1/me/rooms"), await client.get("/v1/no-such-route")):
        assert answer.status_code in (401, 404)
        assert answer.headers["cache-control"] == "no-store" and answer.headers["x-content-type-options"]


async def _ask(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    # a live tail is an endless stream: its headers are the answer
    async with client.stream(method, path) as answer:
        return answer
