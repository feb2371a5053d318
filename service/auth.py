"""API keys, checked before a request's body is read.

FastAPI parses a multipart body before any dependency runs, so a key check written as a
dependency lets an unauthenticated client make the server read (and spool to disk) a whole
upload before it is refused. This middleware answers 401 from the request line and headers
alone; the body is never read, and the connection is closed.

What stays open without a key: the health checks always; the search page, its static files
and the API schema and docs (no data, only the page and the description of the API) unless
``SONA_PUBLIC_PAGES=false``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import problem_response
from .request_id import instance_of

__all__ = ["HEALTH_PATHS", "PAGE_PATHS", "AuthMiddleware", "key_matches"]

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
#: The page, its assets and the schema: open when public pages are on.
PAGE_PATHS = frozenset({"/", "/favicon.ico", "/docs", "/docs/oauth2-redirect"})
_PAGE_PREFIXES = ("/static/", "/docs/assets/", "/openapi.json")


def key_matches(authorization: str, keys: Sequence[bytes]) -> bool:
    """``Bearer KEY`` against every configured key, in constant time.

    Digests have one length, so ``compare_digest`` never returns early on a length mismatch;
    no early exit either: the time does not depend on which key (if any) matched.
    """
    scheme, _, token = authorization.partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    digest = hashlib.sha256(presented).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    return matched


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: Sequence[bytes], public_pages: bool) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.public_pages = public_pages

    def _open(self, path: str) -> bool:
        if path in HEALTH_PATHS:
            return True
        return self.public_pages and (path in PAGE_PATHS or path.startswith(_PAGE_PREFIXES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", ())).get(b"authorization", b"")
        if key_matches(header.decode("latin-1"), self.keys):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            401,
            "a valid API key is required: send 'Authorization: Bearer <key>'",
            code="unauthorized",
            instance=instance_of(scope),
            headers={"WWW-Authenticate": 'Bearer realm="sona"', "Connection": "close"},
        )
        await response(scope, receive, send)
