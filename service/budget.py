"""Bounds on decoding: pixels in flight across the process, and pixels per request.

A 16 KB PNG can declare 16 million pixels: the bytes a request is allowed to carry say little
about the memory and CPU its decoding takes. So every decode first reserves its declared pixel
count, process-wide (``PixelBudget``: past it, a decode waits a moment and then the request is
answered 503 with Retry-After), and counts it against its request (``RequestPixels``: past it,
413, since sending the same request again can never succeed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from .embedder import Overloaded
from .imaging import ImageError

__all__ = ["PixelBudget", "RequestPixels", "RequestTooLarge"]


class RequestTooLarge(ImageError):
    status = 413
    code = "request-too-large"
    title = "Request too large"


class PixelBudget:
    """At most ``limit`` declared pixels being decoded at once in this process.

    A decode waits up to ``wait_s`` for room, then raises ``Overloaded``. One image larger than
    the whole budget takes all of it (the per-image limits bound it already).
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        n = min(max(int(pixels), 0), self.limit)
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.in_flight + n > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Overloaded("the decoders are at their pixel budget")
                self._cond.wait(remaining)
            self.in_flight += n
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= n
                self._cond.notify_all()


class RequestPixels:
    """The declared pixels of one request's images, at most ``limit`` in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, pixels: int) -> None:
        if self.used + pixels > self.limit:
            raise RequestTooLarge(
                f"The images of this request declare more than {self.limit} pixels in all "
                f"({self.used + pixels} so far); send fewer or smaller images per request."
            )
        self.used += pixels
