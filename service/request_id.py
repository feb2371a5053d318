"""Request ids: one per request, in the response header, the access log line, every log line
written while the request runs, and the ``instance`` of its problem details.

A client or gateway may send its own ``X-Request-ID`` (letters, digits, ``._:-``, at most 64):
it is kept, so one id follows a request through the proxies and this service. Otherwise the
service makes one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "HEADER",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "current_request_id",
    "instance_of",
]

HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_current: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("sona.access")


def current_request_id() -> str:
    """The id of the request being handled in this context, ``-`` outside one."""
    return _current.get()


def instance_of(scope: Scope) -> str:
    """The problem-details ``instance`` of this request: its id, or its path before one."""
    request_id = scope.get("state", {}).get("request_id")
    return f"urn:sona-reid:request:{request_id}" if request_id else scope.get("path", "")


class RequestIdFilter(logging.Filter):
    """Gives every log record a ``request_id`` attribute (for formats and JSON fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current.get()
        return True


class RequestIdMiddleware:
    """The outermost layer: names the request, answers its id, writes its access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _ACCEPTED.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = _current.set(request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, status, (time.perf_counter() - start) * 1000, request_id)
            _current.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, ms: float, request_id: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else "-"
        path = scope.get("path", "")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        access_log.info(
            '%s - "%s %s HTTP/%s" %d %.1f ms request_id=%s',
            address,
            scope["method"],
            path,
            scope.get("http_version", "1.1"),
            status,
            ms,
            request_id,
            extra={
                "client": address,
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round(ms, 2),
            },
        )
