"""Request bodies: refused with 413 before they are read whole, and with 408 when too slow.

A declared ``Content-Length`` over the limit is answered at once; a body without one (chunked)
is counted as it streams in and cut off as soon as it passes the limit. A body that has not
arrived whole within ``timeout`` seconds is cut off too: a client trickling an upload holds a
connection, a worker and a temporary file for as long as it likes otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem_response
from .request_id import instance_of

__all__ = ["BodyLimitMiddleware"]


class _Refused(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, limit_for: Callable[[str, str], int], timeout: float = 120.0
    ) -> None:
        self.app = app
        self.limit_for = limit_for  # (method, path) -> bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, 413, limit)
            return
        received = 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        complete = False
        verdict: int | None = None  # 413 or 408: whatever the app answers becomes that
        refused = False

        async def guarded_receive() -> Message:
            nonlocal received, complete, verdict
            if complete:  # after the body only a disconnect can come: no deadline for that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                verdict = 408
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    verdict = 413
                    raise _Refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if verdict is None:
                await send(message)
            elif not refused:  # the body parser turned our exception into its own error
                refused = True
                await self._refuse(scope, receive, send, verdict, limit)

        with contextlib.suppress(_Refused):
            await self.app(scope, guarded_receive, guarded_send)
        if verdict is not None and not refused:
            await self._refuse(scope, receive, send, verdict, limit)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, limit: int
    ) -> None:
        if status == 408:
            detail = f"the request body did not arrive whole within {self.timeout:g} s"
            code = "request-timeout"
        else:
            detail = f"the request body is larger than this route accepts ({limit} bytes)"
            code = "payload-too-large"
        response = problem_response(
            status, detail, code=code, instance=instance_of(scope), headers={"Connection": "close"}
        )
        await response(scope, receive, send)
