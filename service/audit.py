"""The audit trail: one JSON line per read or write of people's data, and per refusal.

Each line says when, which key (its name, never the key), from which address, the request
id, the route, the gallery, the query's filters, the item ids returned or written and the
status. It is written before the response starts, so nothing is disclosed that is not
recorded.

Append-only and never torn in practice: the file is opened with ``O_APPEND`` and each line
leaves in one ``os.write`` of at most ``MAX_LINE`` bytes, so lines of concurrent writers do
not interleave and a kill -9 leaves a line whole or absent. (Should the process die inside
that very call, the reader skips the cut line as not JSON, and the next start ends it with
a newline so that it cannot swallow the next record.) Lines reach the kernel at once; like
any log they reach the disk with the page cache, so a power cut may lose the last seconds.
The file rotates by size (``audit.log.1`` is the newest rotated file) and keeps
``SONA_AUDIT_KEEP`` of them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import AUDITED, route_key
from .audit_read import rotated

__all__ = ["MAX_LINE", "AuditLog", "AuditMiddleware", "note"]

log = logging.getLogger("sona.service")
#: Longest line: long lists of item ids are cut to fit, and the line says how many there were.
MAX_LINE = 16 * 1024
_REFUSALS = frozenset({401, 403})


def note(request: Request, **fields: Any) -> None:
    """Add what a route knows (gallery, filters, item ids) to its request's audit line."""
    request.scope.setdefault("state", {}).setdefault("audit", {}).update(fields)


def _encode(record: dict[str, Any]) -> bytes:
    line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
    if len(line) <= MAX_LINE:
        return line
    items = list(record.get("items") or ())
    record = {**record, "items_total": len(items)}
    while items:
        items = items[: len(items) // 2]
        line = json.dumps({**record, "items": items}, separators=(",", ":"), default=str)
        if len(line) < MAX_LINE:
            return line.encode() + b"\n"
    short = {k: record.get(k) for k in ("time", "key", "request_id", "method", "route", "status")}
    return json.dumps({**short, "truncated": True}, default=str).encode()[: MAX_LINE - 1] + b"\n"


class AuditLog:
    """The writer: thread-safe, append-only, rotating by size."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.errors = 0

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        size = os.fstat(fd).st_size
        if size:  # a line cut by a crash must not swallow the next one
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")
        return fd

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        rotated(self.path, self.keep).unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            if rotated(self.path, n).exists():
                os.replace(rotated(self.path, n), rotated(self.path, n + 1))
        os.replace(self.path, rotated(self.path, 1))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; a failure (a full disk) is logged and counted, not raised."""
        line = _encode(record)
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = self._open()
                if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                    self._rotate()
                    self._fd = self._open()
                os.write(self._fd, line)
            except OSError as exc:
                self.errors += 1
                log.error("cannot write the audit trail %s: %s", self.path, exc.strerror)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AuditMiddleware:
    """Writes the line of each audited request as its response starts (or, for a request
    that ends without one, as it ends). Sits outside the key check, to see its refusals."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    def _record(self, scope: Scope, status: int) -> dict[str, Any]:
        state = scope.get("state", {})
        principal = state.get("principal")
        method, route = route_key(scope)
        client = scope.get("client")
        record: dict[str, Any] = {
            "time": _now(),
            "key": principal.name if principal else None,
            "role": principal.role if principal else None,
            "client": client[0] if client else None,
            "request_id": state.get("request_id"),
            "method": method,
            "route": route,
            "status": status,
        }
        if route is None:
            record["path"] = scope.get("path", "")[:256]
        record.update(state.get("audit", {}))
        return record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        audited = route_key(scope) in AUDITED
        written = False
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal written, status
            if message["type"] == "http.response.start":
                status = message["status"]
                if audited or status in _REFUSALS:
                    self.audit.write(self._record(scope, status))
                    written = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if audited and not written:  # the client left, or the app failed before answering
                self.audit.write(self._record(scope, status))
