"""The gallery-store interface every backend implements (embedded FAISS + SQLite; Milvus).

The HTTP API is written against this interface alone, so a backend change changes no
behaviour: ids, metadata, filters, grouping, deletion, counts and durability are the same.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

__all__ = [
    "GALLERY_NAME",
    "GalleryStore",
    "Hit",
    "Item",
    "NewItem",
    "SearchFilter",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "check_search_args",
]

#: Gallery names: letters, digits, '_' and '-', 1 to 64 characters.
GALLERY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

GroupBy = Literal["identity", "track"]


class StoreError(RuntimeError):
    """The store cannot do what was asked (a bad gallery name, a wrong dimension, ...)."""


class StoreFullError(StoreError):
    """The disk is full: the write was refused and nothing of it was kept."""


class StoreUnavailableError(RuntimeError):
    """The backend cannot be reached (a database server down); nothing was changed."""


def check_search_args(k: object, group_by: object) -> int:
    """Validate what every backend's ``search`` takes besides the query; returns k as an int."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise StoreError(f"k must be an integer >= 1, not {k!r}")
    if group_by not in (None, "identity", "track"):
        raise StoreError(f"group_by must be 'identity', 'track' or None, not {group_by!r}")
    return int(k)


@dataclass(frozen=True)
class NewItem:
    """One crop to add: its embedding, metadata and the crop's bytes as uploaded."""

    embedding: np.ndarray  # float32 [D], L2-normalised
    camera_id: str
    timestamp: datetime  # timezone-aware
    image: bytes
    image_type: str  # media type, e.g. "image/jpeg"
    identity: str | None = None
    track_id: str | None = None


@dataclass(frozen=True)
class Item:
    """A stored crop's metadata."""

    item_id: str
    gallery: str
    camera_id: str
    timestamp: datetime  # timezone-aware, as given
    image_type: str
    created_at: datetime  # when the store acknowledged it (UTC)
    identity: str | None = None
    track_id: str | None = None


@dataclass(frozen=True)
class SearchFilter:
    """Which items may be returned. Time bounds are inclusive; ``None`` means no bound."""

    cameras: frozenset[str] | None = None  # only these cameras
    exclude_cameras: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    exclude_item: str | None = None  # searching by an item: never return the item itself


@dataclass(frozen=True)
class Hit:
    item: Item
    score: float  # inner product of unit vectors: cosine similarity


class GalleryStore(abc.ABC):
    """Durable storage and exact-when-filtered search over galleries of embeddings."""

    dim: int

    @abc.abstractmethod
    def add(self, gallery: str, items: Sequence[NewItem]) -> list[Item]:
        """Store ``items`` in ``gallery`` (created on first use), all or none.

        Returns only once the items are durable (they survive kill -9 and power loss) and
        searchable. Raises ``StoreFullError`` when the disk is full, ``StoreError`` for a bad
        gallery name or embedding shape.
        """

    @abc.abstractmethod
    def get(self, item_id: str) -> Item | None: ...

    @abc.abstractmethod
    def get_embedding(self, item_id: str) -> np.ndarray | None: ...

    @abc.abstractmethod
    def get_image(self, item_id: str) -> tuple[bytes, str] | None:
        """The crop's bytes and media type."""

    @abc.abstractmethod
    def delete(self, item_id: str) -> bool:
        """Remove an item from storage and index; False when there was none."""

    @abc.abstractmethod
    def search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter | None = None,
        group_by: GroupBy | None = None,
    ) -> list[Hit]:
        """The top ``k`` items of ``gallery`` by cosine similarity, best first.

        Exactly the top k among the items that pass ``where`` (fewer only when fewer pass).
        ``group_by``: the best item of each identity (or track), so k results are k distinct
        people; an item without that label is a group of its own. An unknown gallery is empty.
        """

    @abc.abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """Item counts per gallery, then per camera."""

    @abc.abstractmethod
    def count(self, gallery: str | None = None) -> int:
        """Items in ``gallery`` (all galleries when None); 0 for an unknown gallery."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
