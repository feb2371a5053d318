"""Durable files: fsync, atomic replacement, and telling a full disk from other failures.

Every store acknowledges a write only after its bytes are on disk. These helpers are the one
place that knows how: a file is fsynced before it is renamed into place, and the directory that
gained the entry is fsynced after, or a power cut could lose the name though the data survived.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FULL_ERRNOS",
    "atomic_write",
    "fsync_dir",
    "is_full",
    "mkdirs",
    "mkdirs_durable",
    "write_new_file",
]

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_WORDS = ("no space left", "disk quota", "quotaexceeded", "quota exceeded", "disk is full")


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` reports a full disk or an exhausted quota (OS, SQLite, FAISS, Milvus)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    ):
        return True
    return any(word in str(exc).lower() for word in _FULL_WORDS)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdirs(path: Path) -> set[Path]:
    """Create ``path`` and missing parents; return the directories that gained an entry."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    changed: set[Path] = set()
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        changed.add(d.parent)
    return changed


def mkdirs_durable(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that gained an entry."""
    for d in sorted(mkdirs(path)):
        fsync_dir(d)


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet and fsync it (not its directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None], tmp: Path | None = None) -> None:
    """Write through ``tmp`` (default ``path.tmp``): fsync, rename over ``path``, fsync the dir.

    Readers see the old file or the new one, never half of one.
    """
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
