"""The HTTP/1.1 connection: uvicorn's httptools protocol with limits it lacks, and problem+json.

uvicorn buffers a request's header block however large it grows and however slowly it comes,
and answers a malformed request with ``text/plain``. This protocol refuses a header block past
``max_header_bytes`` (431) or not complete within ``header_timeout_s`` (408), and answers those
and malformed requests (400) as RFC 9457 problem details like every other error, then closes
the connection. What happens after the headers (the body, its size and pace) is the ASGI
middleware's (``limits.py``).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["limited_protocol"]


class _LimitedProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 30.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._in_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        waiting = self._in_headers
        if waiting and self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(
                self.header_timeout_s, self._headers_too_slow
            )
        super().data_received(data)
        if waiting and self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(
                    431,
                    f"the request line and headers are over {self.max_header_bytes} bytes",
                    "header-too-large",
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1", "bad-request")

    def _cancel_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(
                408,
                f"the request line and headers did not arrive within {self.header_timeout_s:g} s",
                "request-timeout",
            )

    def _refuse(self, status: int, detail: str, code: str) -> None:
        self._cancel_timer()
        phrase = HTTPStatus(status).phrase
        body = json.dumps(
            {
                "type": f"urn:sona-reid:problem:{code}",
                "title": phrase,
                "status": status,
                "detail": detail,
            }
        ).encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int, header_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.run(http=...)``, with these limits."""
    return type(
        "SonaHttpProtocol",
        (_LimitedProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
