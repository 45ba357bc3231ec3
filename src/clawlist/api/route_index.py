"""Route dispatch through an index of literal path prefixes.

Starlette tries every route's regular expression in order until one matches. With ~160 routes
(the native API plus the Matrix façade under two prefixes) that scan cost more server CPU than
many handlers under load. `RouteIndex` keys each route by the first `KEY_SEGMENTS` segments of
its literal prefix (the path up to its first `{parameter}`), so a request is only tried against
the routes that could match it — in the original order, which keeps Starlette's "first full
match wins" rule. Anything that is not a full match (405 partials, slash redirects, 404s,
lifespan) is handed to the router's own dispatch, so behaviour is unchanged; only the cost moves.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send

#: Deep enough to tell `/_matrix/client/v3/rooms/...` from `/_matrix/client/v3/sync`.
KEY_SEGMENTS = 5


def _full_segments(path: str) -> tuple[str, ...]:
    """The leading segments of `path` that are fixed text in every URL the route matches."""
    literal, brace, _ = path.partition("{")
    segments = literal.split("/")
    if brace:
        segments.pop()  # the segment the first parameter starts in is not fixed
    return tuple(segments[:KEY_SEGMENTS])


def _route_path(scope: Scope) -> str:
    """The path routes match against: Starlette's rule for an application mounted at `root_path`."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


class RouteIndex:
    """The router's dispatch (`router.middleware_stack`), trying only the candidate routes.

    Each route's key is its fixed leading segments (at most `KEY_SEGMENTS`); a route can only
    match a path whose segments start with its key. The keys and all their prefixes form a trie;
    a request walks to the deepest trie node its path reaches, and that node lists, in route
    order, every route whose key is a prefix of it.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.fallback = router.middleware_stack
        self.routes: list[BaseRoute] = list(router.routes)
        keys: list[tuple[str, ...]] = []
        for route in self.routes:
            path = getattr(route, "path", None)
            keys.append(_full_segments(path) if isinstance(path, str) else ())
        nodes = {key[:depth] for key in [(), *keys] for depth in range(len(key) + 1)}
        self.nodes: dict[tuple[str, ...], list[BaseRoute]] = {
            node: [route for route, key in zip(self.routes, keys, strict=True) if node[: len(key)] == key]
            for node in nodes
        }

    @classmethod
    def install(cls, router: Router) -> RouteIndex:
        """Call once every route is registered; routes added later are still found, by the fallback."""
        index = cls(router)
        router.middleware_stack = index
        return index

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes that could match `path`, in route order."""
        segments = tuple(path.split("/", KEY_SEGMENTS)[:KEY_SEGMENTS])
        depth = len(segments)
        routes = self.nodes.get(segments)
        while routes is None:  # the empty key () is always a node, so this ends
            depth -= 1
            routes = self.nodes.get(segments[:depth])
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and len(self.router.routes) == len(self.routes):
            for route in self.candidates(_route_path(scope)):
                match, child_scope = route.matches(scope)
                if match == Match.FULL:
                    scope.setdefault("router", self.router)
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await self.fallback(scope, receive, send)

    def stats(self) -> dict[str, Any]:
        """For tests and curiosity: how many routes the busiest key narrows the scan to."""
        return {
            "routes": len(self.routes),
            "nodes": len(self.nodes),
            "largest": max(len(routes) for routes in self.nodes.values()),
        }
