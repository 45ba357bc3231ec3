"""The route index picks exactly the route Starlette's linear scan would pick, for every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, Route

from clawlist.api.route_index import RouteIndex
from clawlist.app import create_app
from clawlist.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("route-index")))


def _sample_paths(path: str) -> list[str]:
    """URLs a route matches: parameters filled with plain values, and with values that look
    like the literal segments of other routes (a room id that happens to read `public`)."""
    fills = ["x", "public", "!room:example.org"]
    return [re.sub(r"\{[^}:]+:path\}", "a/b", re.sub(r"\{[^}:]+\}", fill, path)) for fill in fills]


def _linear_first(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_the_index_is_installed_and_narrows_the_scan(app: FastAPI) -> None:
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    stats = index.stats()
    assert stats["routes"] == len(app.router.routes) > 100
    # the busiest prefixes (Matrix rooms, native rooms) need at most a few dozen tries, not all
    assert stats["largest"] < stats["routes"] / 4


def test_every_route_is_dispatched_as_the_linear_scan_would(app: FastAPI) -> None:
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    checked = 0
    for route in app.router.routes:
        if not isinstance(route, Route):
            continue
        for method in sorted(route.methods or {"GET"}):
            for path in _sample_paths(route.path):
                scope = _scope(method, path)
                expected = _linear_first(app.router.routes, scope)
                assert expected is not None, (method, path)
                assert _linear_first(index.candidates(path), scope) is expected, (method, path)
                checked += 1
    assert checked > 300


@pytest.mark.parametrize(
    "path",
    ["/", "", "/nope", "/_matrix", "/_matrix/client/v3/", "/api/v1/rooms//x", "/a/b/c/d/e/f/g"],
)
def test_unmatched_paths_stay_unmatched(app: FastAPI, path: str) -> None:
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    scope = _scope("GET", path)
    assert _linear_first(index.candidates(path), scope) is _linear_first(app.router.routes, scope)
