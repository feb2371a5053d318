"""Which role each route needs, which routes the audit trail records, and which route a
request is for, decided from the request line alone (before any body is read).

Every route of the API must be in ``ROUTE_ROLES``: ``check_routes`` refuses to build an app
with a route that is not, so a new route cannot be left open by mistake.
"""

from __future__ import annotations

from collections.abc import Iterator

import fastapi.routing
from starlette.routing import BaseRoute, compile_path
from starlette.types import Scope

from .keys import Role

__all__ = [
    "AUDITED",
    "DEFAULT_GALLERY",
    "OPEN",
    "ROUTE_ROLES",
    "RouteTable",
    "api_routes",
    "check_routes",
    "required_role",
    "route_key",
    "route_of",
]

#: A route anyone may call: the health checks.
OPEN: Role | None = None
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("POST", "/embed"): "search",
    ("GET", "/search"): "search",
    ("POST", "/search"): "search",
    ("GET", "/gallery"): "search",  # counts of the galleries the key sees
    ("GET", "/gallery/{item_id}"): "search",
    ("GET", "/gallery/{item_id}/image"): "search",
    ("GET", "/gallery/tracks"): "search",
    ("GET", "/gallery/tracks/{track_id}"): "search",
    ("POST", "/gallery"): "ingest",
    ("DELETE", "/gallery/{item_id}"): "admin",
    ("DELETE", "/gallery/tracks/{track_id}"): "admin",
    ("DELETE", "/gallery"): "admin",
    ("GET", "/metrics"): "admin",
}
#: Routes whose gallery is ``default`` when ``?gallery=`` is absent: a key limited to other
#: galleries is refused there before the route runs (GET /search checks its own, since a
#: search by item uses the item's gallery).
DEFAULT_GALLERY = frozenset(
    {
        ("POST", "/gallery"),
        ("POST", "/search"),
        ("GET", "/gallery/tracks"),
        ("GET", "/gallery/tracks/{track_id}"),
        ("DELETE", "/gallery/tracks/{track_id}"),
    }
)
#: What the audit trail records besides refusals: every read or write of people's data.
AUDITED = frozenset(
    k for k, role in ROUTE_ROLES.items() if role is not OPEN and k[1] not in ("/metrics",)
) - {("GET", "/gallery")}


class RouteTable:
    """The API's routes as (methods, compiled path, template), matched from the request line
    alone, in the router's order (``/gallery/tracks/...`` before ``/gallery/{item_id}``)."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.entries = [
            (frozenset(methods), compile_path(path)[0], path, shown)
            for methods, path, shown in api_routes(routes)
        ]

    def match(self, method: str, path: str) -> str | None:
        """The template of the route that takes ``method path``; for a path that a route of
        another method takes, that route's template (the answer will be 405); else None."""
        partial = None
        for methods, regex, template, _ in self.entries:
            if regex.match(path):
                if method in methods:
                    return template
                partial = partial or template
        return partial


def api_routes(routes: list[BaseRoute]) -> Iterator[tuple[set[str], str, bool]]:
    """(methods, path template, in the schema) of every endpoint, routers included."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # a FastAPI that flattens included routers into app.routes
        found = ((r, getattr(r, "path", None)) for r in routes)
    else:
        found = ((c.original_route, c.path) for c in contexts(routes))
    for route, path in found:
        methods = getattr(route, "methods", None)
        if methods and path:
            yield set(methods), path, bool(getattr(route, "include_in_schema", False))


def route_of(scope: Scope) -> str | None:
    """The path template of the route that will take this request; None for no route."""
    app = scope.get("app")
    state = getattr(app, "state", None)
    table = getattr(state, "route_table", None)
    if table is None:
        table = RouteTable(getattr(getattr(app, "router", None), "routes", []))
        if state is not None:
            state.route_table = table
    return table.match(scope["method"], scope["path"])


def required_role(method: str, route: str | None) -> Role | None:
    """The role a request needs. A route outside the table (a 404 or 405, a page) needs the
    least role: it reaches no data."""
    method = "GET" if method == "HEAD" else method
    return ROUTE_ROLES.get((method, route or ""), "search")


def check_routes(routes: list[BaseRoute]) -> None:
    """Refuse an API route that ``ROUTE_ROLES`` does not name."""
    for methods, path, shown in api_routes(routes):
        for method in sorted(methods - {"HEAD"}):
            if shown and (method, path) not in ROUTE_ROLES:
                raise RuntimeError(f"{method} {path} has no role in service.access.ROUTE_ROLES")


def route_key(scope: Scope) -> tuple[str, str | None]:
    """(method, route template) of the request, computed once and kept in its state."""
    state = scope.setdefault("state", {})
    if "route" not in state:
        state["route"] = route_of(scope)
    method = scope["method"]
    return ("GET" if method == "HEAD" else method), state["route"]
