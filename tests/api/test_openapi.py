"""The OpenAPI document describes exactly what the API serves: no route undocumented, no path unserved.

The fuzz tests (test_api_fuzz.py) generate their requests from the document, so a route missing from it
would never be fuzzed, and a documented path the API does not serve would only ever answer 404.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from api_world import api_settings
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from pipeline.api import create_app, route_table
from pipeline.api.openapi import assembly, document

SETTINGS = api_settings()


def served() -> set[tuple[str, str]]:
    """(path, method) of every /v1 route the app answers (HEAD is Starlette's, for each GET)."""
    app = create_app(SETTINGS, "unused", registry=CollectorRegistry())
    return {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in (route.methods or set()) - {"HEAD"}
    }


def documented() -> set[tuple[str, str]]:
    return {
        (path, method) for path, operations in document(SETTINGS)["paths"].items() for method in operations
    }


def test_every_served_route_is_documented_and_every_documented_path_is_served() -> None:
    assert served() - documented() == set(), "served, not in the OpenAPI document"
    assert documented() - served() == set(), "in the OpenAPI document, not served"


def test_path_parameters_are_the_templates() -> None:
    for path, operations in document(SETTINGS)["paths"].items():
        for op in operations.values():
            in_path = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert in_path == re.findall(r"{(\w+)}", path), (path, op["operationId"])


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for ops in document(SETTINGS)["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_a_route_without_a_description_stops_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    new = dataclasses.replace(route_table.ROUTES[0], path="/v1/rooms/{room_id}/new", action="new.thing")
    monkeypatch.setattr(assembly, "ROUTES", (*route_table.ROUTES, new))
    with pytest.raises(
        LookupError, match=r"/v1/rooms/\{room_id\}/new is served but has no OpenAPI operation"
    ):
        document(SETTINGS)


def test_a_description_of_no_route_stops_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assembly, "ROUTES", route_table.ROUTES[1:])
    with pytest.raises(LookupError, match="OpenAPI operations of no route"):
        document(SETTINGS)
