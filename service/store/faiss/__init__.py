"""The embedded store: FAISS indexes over a SQLite catalog, one process, one data directory."""

from __future__ import annotations

from .spec import AUTO, AUTO_CANDIDATES, AUTO_NLIST, AUTO_NPROBE, AUTO_THRESHOLD, auto_factory
from .store import FaissSqliteStore

__all__ = [
    "AUTO",
    "AUTO_CANDIDATES",
    "AUTO_NLIST",
    "AUTO_NPROBE",
    "AUTO_THRESHOLD",
    "FaissSqliteStore",
    "auto_factory",
]
