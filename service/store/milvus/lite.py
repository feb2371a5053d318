"""Milvus Lite: one embedded server per database path, shared by the stores of this process."""

from __future__ import annotations

import contextlib
import logging
import threading

__all__ = ["acquire", "is_lite", "quiet_iterators", "release"]


_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}
_lite_write_locks: dict[str, threading.Lock] = {}


def is_lite(uri: str) -> bool:
    """A local ``.db`` path: pymilvus runs Milvus Lite in this process for it."""
    return uri.endswith(".db") and "://" not in uri


def acquire(path: str) -> threading.Lock:
    """Count a user of the embedded server; returns the lock its writes must hold.

    Milvus Lite 3.2 serves each request on a thread of a pool but does not serialise writes to
    a collection: two inserts at once interleave their bytes in its write-ahead log, and the
    recovery after a crash stops at the first broken record, losing acknowledged items (seen
    here with the service's kill -9 test). Only this process can open the database (Milvus Lite
    holds a file lock), so one lock per database path, held around every insert and delete,
    is enough. Milvus standalone and clusters need no such lock.
    """
    with _lite_lock:
        _lite_users[path] = _lite_users.get(path, 0) + 1
        return _lite_write_locks.setdefault(path, threading.Lock())


def release(path: str) -> None:
    """Stop the embedded server once no store of this process uses it (closes its WAL)."""
    with _lite_lock:
        n = _lite_users.get(path, 0) - 1
        if n > 0:
            _lite_users[path] = n
            return
        _lite_users.pop(path, None)
    with contextlib.suppress(ImportError):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


class _DropLiteIteratorWarning(logging.Filter):
    """Milvus Lite has no MVCC timestamp for iterators; pymilvus warns about it on every scan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


def quiet_iterators() -> None:
    logger = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _DropLiteIteratorWarning) for f in logger.filters):
        logger.addFilter(_DropLiteIteratorWarning())
