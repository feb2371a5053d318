"""API keys, roles and gallery limits, checked before a request's body is read.

FastAPI parses a multipart body before any dependency runs, so a key check written as a
dependency lets an unauthenticated client make the server read (and spool to disk) a whole
upload before it is refused. This middleware answers from the request line and headers
alone: 401 without a valid key, 403 for a key whose role is too low, 404 for a gallery the key
does not see (as if it did not exist); the body is never read, and the connection is closed.

What passes it carries the key's ``Principal`` in ``scope["state"]["principal"]``: the routes
hide items of other galleries with it, and the audit trail names the key by it.

What stays open without a key: the health checks always; the search page, its static files
and the API schema and docs (no data, only the page and the description of the API) unless
``SONA_PUBLIC_PAGES=false``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from .access import DEFAULT_GALLERY, OPEN, required_role, route_key
from .errors import problem_response
from .keys import KeyTable, Principal
from .request_id import instance_of

__all__ = ["HEALTH_PATHS", "OPEN_SERVICE", "PAGE_PATHS", "AuthMiddleware", "principal_of"]

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
#: The page, its assets and the schema: open when public pages are on.
PAGE_PATHS = frozenset({"/", "/favicon.ico", "/docs", "/docs/oauth2-redirect"})
_PAGE_PREFIXES = ("/static/", "/docs/assets/", "/openapi.json")
#: Who a request acts for when no key is configured anywhere.
OPEN_SERVICE = Principal(None, "admin")


def principal_of(scope: Scope) -> Principal | None:
    return scope.get("state", {}).get("principal")


def _bearer(scope: Scope) -> bytes:
    header = dict(scope.get("headers", ())).get(b"authorization", b"")
    scheme, _, token = header.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyTable, public_pages: bool) -> None:
        self.app = app
        self.keys = keys
        self.public_pages = public_pages

    def _page(self, path: str) -> bool:
        return self.public_pages and (path in PAGE_PATHS or path.startswith(_PAGE_PREFIXES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        self.keys.refresh()
        if not self.keys.required:
            scope.setdefault("state", {})["principal"] = OPEN_SERVICE
            await self.app(scope, receive, send)
            return
        if self._page(scope["path"]):
            await self.app(scope, receive, send)
            return
        principal = self.keys.lookup(_bearer(scope))
        if principal is None:
            await self._refuse(
                scope,
                receive,
                send,
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                "unauthorized",
                {"WWW-Authenticate": 'Bearer realm="sona"'},
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        method, route = route_key(scope)
        role = required_role(method, route)
        if role is not OPEN and not principal.may(role):
            await self._refuse(
                scope,
                receive,
                send,
                403,
                f"{method} {route} needs a key with role {role} or higher; key "
                f"{principal.name!r} has role {principal.role}",
                "forbidden",
                required_role=role,
            )
            return
        hidden = self._hidden_gallery(scope, principal, (method, route))
        if hidden is not None:
            scope["state"].setdefault("audit", {})["gallery"] = hidden[:64]
            await self._refuse(
                scope,
                receive,
                send,
                404,
                f"gallery {hidden[:64]!r} does not exist",
                "gallery-not-found",
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _hidden_gallery(
        scope: Scope, principal: Principal, route: tuple[str, str | None]
    ) -> str | None:
        """A gallery the request names (or defaults to) that the key does not see."""
        if principal.galleries is None:
            return None
        query = scope.get("query_string", b"").decode("latin-1")
        named = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "gallery"]
        if not named and route in DEFAULT_GALLERY:
            named = ["default"]
        return next((g for g in named if not principal.sees(g)), None)

    @staticmethod
    async def _refuse(
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        detail: str,
        code: str,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        response = problem_response(
            status,
            detail,
            code=code,
            instance=instance_of(scope),
            headers={**(headers or {}), "Connection": "close"},
            **extra,
        )
        await response(scope, receive, send)
