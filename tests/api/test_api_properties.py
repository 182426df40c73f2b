"""Whatever a client sends within HTTP, the API answers it without a 5xx, and a client's request id is a
label it keeps, never the key of anything (hypothesis, against the session's pipeline world)."""

from __future__ import annotations

import re
import uuid

import httpx
from api_world import World, bearer, staff
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import EDGE_MILLIS, any_uuid, odd_values, request_ids, uuid_spellings

# the `api` fixture is one app for all examples: it keeps no state between them that matters here
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OWNER = bearer("u-owner")


def _v7(millis: int) -> str:
    return str(uuid.UUID(int=(millis << 80) | (7 << 76) | (0b10 << 62) | 12345))


@PROPERTY
@given(event_id=any_uuid().flatmap(uuid_spellings))
@example(event_id=_v7(EDGE_MILLIS[-1]))  # year 10889: was a 500
@example(event_id=_v7(EDGE_MILLIS[2]))  # 9999-12-31T23:59:59.999Z: one day later overflows a datetime
@example(event_id=_v7(0))
async def test_any_event_id_is_found_or_not_found(api: httpx.AsyncClient, event_id: str) -> None:
    r = await api.get(f"/v1/rooms/room-1/events/{event_id}", headers=staff())
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


async def test_a_stored_event_is_found_under_every_spelling_of_its_id(
    api: httpx.AsyncClient, pipeline_world: World
) -> None:
    stored = uuid.UUID(pipeline_world.ids["chat0"])
    for spelling in (str(stored), str(stored).upper(), stored.hex, "{" + str(stored) + "}"):
        r = await api.get(f"/v1/rooms/room-1/events/{spelling}", headers=OWNER)
        assert (r.status_code, r.json()["event_id"]) == (200, str(stored)), spelling


ROUTE_PARAMETERS = {
    "/v1/rooms/room-1/events": ("since", "until", "type", "actor", "target", "q", "order", "limit", "cursor"),
    "/v1/rooms/room-1/days": ("from", "to"),
    "/v1/rooms/room-1/export": ("since", "until", "type", "actor", "target", "q", "format", "order", "limit"),
    "/v1/users/u-target/moderation": ("since", "until", "type", "role", "order", "limit", "cursor"),
}
QUERIES = st.sampled_from(sorted(ROUTE_PARAMETERS)).flatmap(
    lambda path: st.tuples(
        st.just(path),
        st.dictionaries(
            st.sampled_from(ROUTE_PARAMETERS[path]) | st.text(max_size=10), odd_values(), max_size=3
        ),
    )
)


@PROPERTY
@given(query=QUERIES)
@example(query=("/v1/rooms/room-1/events", {"limit": "10" * 40}))
@example(query=("/v1/rooms/room-1/events", {"since": "9999-12-31T23:59:59Z"}))
@example(query=("/v1/rooms/room-1/days", {"from": "2099-12-31"}))
@example(query=("/v1/users/u-target/moderation", {"cursor": "x" * 5000}))
async def test_odd_query_values_get_an_answer_never_a_server_error(
    api: httpx.AsyncClient, query: tuple[str, dict[str, str]]
) -> None:
    path, params = query
    r = await api.get(path, params=params, headers=OWNER)
    assert r.status_code in (200, 400, 413, 422), r.text
    if r.status_code != 200:
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


_LABEL = re.compile(r"[!-~]{1,128}")


@PROPERTY
@given(client_id=request_ids())
async def test_a_client_request_id_is_kept_as_a_label_never_as_the_key(
    api: httpx.AsyncClient, pipeline_world: World, client_id: str
) -> None:
    r = await api.get("/v1/rooms/room-1/days", headers={**OWNER, "X-Request-Id": client_id.encode("latin-1")})
    assert r.status_code == 200, r.text
    label = client_id.strip(" \t")
    kept = label if _LABEL.fullmatch(label) else None
    assert r.headers.get("x-client-request-id") == kept
    server_id = r.headers["x-request-id"]
    assert server_id != client_id
    rows = await pipeline_world.audit_rows(server_id)
    assert [(row["outcome"], row["client_request_id"]) for row in rows] == [("ok", kept)]
