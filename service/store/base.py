"""The gallery-store interface every backend implements (embedded FAISS + SQLite; Milvus).

The HTTP API is written against this interface alone, so a backend change changes no
behaviour: ids, metadata, filters, grouping, deletion, counts and durability are the same.
Arguments are validated here, once, before a backend sees them (each public method checks,
then calls the backend's ``_method``), so every backend refuses the same input the same way.
"""

from __future__ import annotations

import abc
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

__all__ = [
    "GALLERY_NAME",
    "ITEM_ID",
    "MEDIA_TYPE",
    "CropMissingError",
    "GalleryStore",
    "GroupBy",
    "Hit",
    "Item",
    "NewItem",
    "SearchFilter",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "aware",
    "check_gallery",
    "check_vector",
]

#: Gallery names: letters, digits, '_' and '-', 1 to 64 characters.
GALLERY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Item ids: what the stores give out (uuid4 hex) and what an import may bring.
ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A media type such as ``image/jpeg`` (RFC 6838 characters).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")

GroupBy = Literal["identity", "track"]


class StoreError(RuntimeError):
    """The store cannot do what was asked (a bad gallery name, a wrong dimension, ...)."""


class StoreFullError(StoreError):
    """The disk is full: the write was refused and nothing of it was kept."""


class StoreRefusedError(StoreError):
    """The backend refused a request the store thought valid (a schema it cannot take, a
    version without a feature): sending it again will not help, unlike an outage."""


class CropMissingError(StoreError):
    """An item whose crop file is gone (deleted by hand, lost storage): the item stays."""


class StoreLockedError(StoreError):
    """Another process holds the store (a running service): stop it, or use that one."""


class StoreUnavailableError(RuntimeError):
    """The backend cannot be reached (a database server down); nothing was changed."""


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

    def stored(self, item_id: str, gallery: str, created_at: datetime) -> Item:
        """The ``Item`` this becomes once a store acknowledged it."""
        return Item(
            item_id=item_id,
            gallery=gallery,
            camera_id=self.camera_id,
            timestamp=self.timestamp,
            image_type=self.image_type,
            created_at=created_at,
            identity=self.identity,
            track_id=self.track_id,
        )


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
    exclude_track: str | None = None  # searching by a track: never return the track's items


@dataclass(frozen=True)
class Hit:
    item: Item
    score: float  # inner product of unit vectors: cosine similarity


# -------------------------------------------------------------------------------- validation


def check_gallery(gallery: object) -> str:
    if not isinstance(gallery, str) or GALLERY_NAME.fullmatch(gallery) is None:
        raise StoreError(f"bad gallery name {gallery!r}: use [A-Za-z0-9_-]{{1,64}}")
    return gallery


def aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise StoreError(f"{what} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError(f"{what} must be timezone-aware")
    return value


def check_vector(value: object, dim: int, what: str) -> np.ndarray:
    """A finite float32 vector of ``dim`` values, or a ``StoreError`` naming ``what``."""
    try:
        v = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} is not a numeric vector") from e
    if v.shape != (dim,):
        raise StoreError(f"{what} has shape {v.shape}, expected ({dim},)")
    if not np.isfinite(v).all():
        raise StoreError(f"{what} has non-finite values")
    return v


def _is_id(value: object) -> bool:
    return isinstance(value, str) and ITEM_ID.fullmatch(value) is not None


class GalleryStore(abc.ABC):
    """Durable storage and exact-when-filtered search over galleries of embeddings."""

    dim: int
    #: Longest camera id, identity or track label in UTF-8 bytes; None: no limit of its own.
    max_text_bytes: int | None = None

    # ------------------------------------------------------------------ validation, once

    def _check_text(self, value: str, what: str) -> None:
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise StoreError(f"{what} is not valid Unicode text") from e
        if self.max_text_bytes is not None and len(encoded) > self.max_text_bytes:
            raise StoreError(f"{what} is longer than {self.max_text_bytes} bytes")

    def check_items(self, items: Sequence[NewItem]) -> np.ndarray:
        """What every backend requires of new items; returns their embeddings ``[n, dim]``."""
        x = np.empty((len(items), self.dim), dtype=np.float32)
        for i, it in enumerate(items):
            what = f"item {i}"
            if not isinstance(it, NewItem):
                raise StoreError(f"items must be NewItem instances, not {type(it).__name__}")
            x[i] = check_vector(it.embedding, self.dim, f"{what} embedding")
            aware(it.timestamp, f"{what} timestamp")
            if not isinstance(it.camera_id, str) or not it.camera_id:
                raise StoreError(f"{what}: camera_id must be a non-empty string")
            self._check_text(it.camera_id, f"{what}: camera_id")
            for name in ("identity", "track_id"):
                value = getattr(it, name)
                if value is not None and (not isinstance(value, str) or not value):
                    raise StoreError(f"{what}: {name} must be a non-empty string or None")
                if value is not None:
                    self._check_text(value, f"{what}: {name}")
            if not isinstance(it.image, bytes | bytearray | memoryview) or not len(it.image):
                raise StoreError(f"{what}: image must be non-empty bytes")
            if (
                not isinstance(it.image_type, str)
                or len(it.image_type) > 255
                or not MEDIA_TYPE.fullmatch(it.image_type)
            ):
                raise StoreError(f"{what}: bad media type {it.image_type!r}")
        return x

    @staticmethod
    def check_search_args(k: object, group_by: object) -> int:
        """Validate what ``search`` takes besides the query; returns k as an int."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise StoreError(f"k must be an integer >= 1, not {k!r}")
        if group_by not in (None, "identity", "track"):
            raise StoreError(f"group_by must be 'identity', 'track' or None, not {group_by!r}")
        return int(k)

    @staticmethod
    def check_filter(where: SearchFilter | None) -> SearchFilter:
        w = where or SearchFilter()
        if not isinstance(w, SearchFilter):
            raise StoreError("where must be a SearchFilter")
        if w.since is not None:
            aware(w.since, "since")
        if w.until is not None:
            aware(w.until, "until")
        for name in ("cameras", "exclude_cameras"):
            values = getattr(w, name)
            if values is not None and not all(isinstance(v, str) for v in values):
                raise StoreError(f"{name} must hold strings")
        if w.exclude_item is not None and not isinstance(w.exclude_item, str):
            raise StoreError("exclude_item must be a string")
        if w.exclude_track is not None and (
            not isinstance(w.exclude_track, str) or not w.exclude_track
        ):
            raise StoreError("exclude_track must be a non-empty string")
        return w

    # ------------------------------------------------------------------ the interface

    def add(self, gallery: str, items: Sequence[NewItem]) -> list[Item]:
        """Store ``items`` in ``gallery`` (created on first use), all or none.

        Returns only once the items are durable (they survive kill -9 and power loss) and
        searchable. Raises ``StoreFullError`` when the disk is full, ``StoreError`` for a bad
        gallery name or item.
        """
        check_gallery(gallery)
        items = list(items)
        x = self.check_items(items)
        if not items:
            return []
        now = datetime.now(UTC)
        return self._write(gallery, items, x, [uuid.uuid4().hex for _ in items], [now] * len(items))

    def restore(
        self,
        gallery: str,
        items: Sequence[NewItem],
        item_ids: Sequence[str],
        created_at: Sequence[datetime],
    ) -> list[Item]:
        """Add items keeping their ids and acknowledgement times: a gallery import.

        Ids already in this gallery are skipped (an import run again continues where it
        stopped); an id held by another gallery is refused. Returns the items added.
        """
        check_gallery(gallery)
        items, item_ids, created_at = list(items), list(item_ids), list(created_at)
        if not len(items) == len(item_ids) == len(created_at):
            raise StoreError("items, item_ids and created_at differ in length")
        for i, item_id in enumerate(item_ids):
            if not _is_id(item_id):
                raise StoreError(f"item {i}: bad item id {item_id!r}")
            aware(created_at[i], f"item {i} created_at")
        if len(set(item_ids)) != len(item_ids):
            raise StoreError("repeated item ids")
        x = self.check_items(items)
        existing = self._galleries_of(item_ids)
        elsewhere = sorted(i for i, g in existing.items() if g != gallery)
        if elsewhere:
            raise StoreError(f"item ids already in another gallery: {', '.join(elsewhere[:5])}")
        keep = [n for n, i in enumerate(item_ids) if i not in existing]
        if not keep:
            return []
        return self._write(
            gallery,
            [items[n] for n in keep],
            x[keep],
            [item_ids[n] for n in keep],
            [created_at[n] for n in keep],
        )

    def get(self, item_id: str) -> Item | None:
        return self._get(item_id) if _is_id(item_id) else None

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        return self._get_embedding(item_id) if _is_id(item_id) else None

    def get_image(self, item_id: str) -> tuple[bytes, str] | None:
        """The crop's bytes and media type; None for no such item. ``CropMissingError`` when
        the item exists but its crop file does not."""
        return self._get_image(item_id) if _is_id(item_id) else None

    def delete(self, item_id: str) -> bool:
        """Remove an item from storage and index; False when there was none."""
        return self._delete(item_id) if _is_id(item_id) else False

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
        check_gallery(gallery)
        k = self.check_search_args(k, group_by)
        q = check_vector(query, self.dim, "query")
        w = self.check_filter(where)
        if w.cameras is not None and not w.cameras:
            return []
        return self._search(gallery, q, k, w, group_by)

    def track(
        self, gallery: str, track_id: str, limit: int = 1000
    ) -> list[tuple[Item, np.ndarray]]:
        """The items of one track of ``gallery`` with their embeddings, in time order (then
        acknowledgement order), at most ``limit``; empty when the track has none. What a
        multi-shot query (the mean of a track's crops) and a track's page are made of."""
        check_gallery(gallery)
        if not isinstance(track_id, str) or not track_id:
            raise StoreError("track_id must be a non-empty string")
        self._check_text(track_id, "track_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"limit must be an integer >= 1, not {limit!r}")
        return self._track(gallery, track_id, limit)

    def count(self, gallery: str | None = None) -> int:
        """Items in ``gallery`` (all galleries when None); 0 for an unknown gallery."""
        if gallery is not None:
            check_gallery(gallery)
        return self._count(gallery)

    def iter_items(
        self, gallery: str, batch: int = 1000
    ) -> Iterator[list[tuple[Item, np.ndarray]]]:
        """The gallery's items with their embeddings, in acknowledgement order, a batch at a
        time (for export); items deleted meanwhile are left out."""
        check_gallery(gallery)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise StoreError(f"batch must be an integer >= 1, not {batch!r}")
        return self._iter_items(gallery, batch)

    @abc.abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """Item counts per gallery, then per camera."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------ what backends write

    @abc.abstractmethod
    def _write(
        self,
        gallery: str,
        items: list[NewItem],
        x: np.ndarray,
        item_ids: list[str],
        created_at: list[datetime],
    ) -> list[Item]:
        """Store validated items under the given ids and acknowledgement times, all or none."""

    @abc.abstractmethod
    def _galleries_of(self, item_ids: list[str]) -> dict[str, str]:
        """The gallery of each of ``item_ids`` that is stored."""

    @abc.abstractmethod
    def _get(self, item_id: str) -> Item | None: ...

    @abc.abstractmethod
    def _get_embedding(self, item_id: str) -> np.ndarray | None: ...

    @abc.abstractmethod
    def _get_image(self, item_id: str) -> tuple[bytes, str] | None: ...

    @abc.abstractmethod
    def _delete(self, item_id: str) -> bool: ...

    @abc.abstractmethod
    def _search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
    ) -> list[Hit]: ...

    @abc.abstractmethod
    def _count(self, gallery: str | None) -> int: ...

    @abc.abstractmethod
    def _track(self, gallery: str, track_id: str, limit: int) -> list[tuple[Item, np.ndarray]]:
        """A track's items, time order, at most ``limit`` (arguments already checked)."""

    @abc.abstractmethod
    def _iter_items(self, gallery: str, batch: int) -> Iterator[list[tuple[Item, np.ndarray]]]: ...

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
