"""Gallery stores: the interface (``base``), the embedded FAISS + SQLite backend (``faiss``)
and the Milvus backend (``milvus``, imported on demand: it needs pymilvus)."""

from __future__ import annotations

from .base import (
    GALLERY_NAME,
    ITEM_ID,
    RESERVED_IDS,
    CropMissingError,
    DegenerateQueryError,
    GalleryStore,
    GroupBy,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    Selection,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreRefusedError,
    StoreUnavailableError,
    TrackSummary,
    UnknownGalleryError,
)
from .faiss import FaissSqliteStore

__all__ = [
    "GALLERY_NAME",
    "ITEM_ID",
    "RESERVED_IDS",
    "CropMissingError",
    "DegenerateQueryError",
    "FaissSqliteStore",
    "GalleryStore",
    "GroupBy",
    "Hit",
    "Item",
    "NewItem",
    "SearchFilter",
    "Selection",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "TrackSummary",
    "UnknownGalleryError",
]
