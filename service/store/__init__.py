"""Gallery stores: the interface and the embedded FAISS + SQLite backend."""

from __future__ import annotations

from .base import (
    GALLERY_NAME,
    GalleryStore,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
)
from .faiss_sqlite import FaissSqliteStore

__all__ = [
    "GALLERY_NAME",
    "FaissSqliteStore",
    "GalleryStore",
    "Hit",
    "Item",
    "NewItem",
    "SearchFilter",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
]
