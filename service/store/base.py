"""The gallery-store interface every backend implements (embedded FAISS + SQLite; Milvus).

The HTTP API is written against this interface alone, so a backend change changes no
behaviour: ids, metadata, filters, grouping, deletion, counts and durability are the same.
Arguments are validated here, once, before a backend sees them (each public method checks,
then calls the backend's ``_method``), so every backend refuses the same input the same way.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np

from .types import (
    GALLERY_NAME,
    ITEM_ID,
    MEDIA_TYPE,
    RESERVED_IDS,
    SOURCE_MAX,
    TRACKS_PAGE_MAX,
    CropMissingError,
    DegenerateQueryError,
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
    aware,
    check_gallery,
    check_provenance,
    check_vector,
    decode_cursor,
    is_id,
    mean_direction,
    page_tracks,
)

__all__ = [
    "GALLERY_NAME",
    "ITEM_ID",
    "MEDIA_TYPE",
    "RESERVED_IDS",
    "SOURCE_MAX",
    "CropMissingError",
    "DegenerateQueryError",
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
    "aware",
    "check_gallery",
    "check_vector",
]


class GalleryStore(abc.ABC):
    """Durable storage and exact-when-filtered search over galleries of embeddings."""

    dim: int
    #: Longest camera id, identity or track label in UTF-8 bytes; None: no limit of its own.
    max_text_bytes: int | None = None
    #: A bulk import (``service.transfer``): items per ``restore`` call, and how many calls
    #: may run at once (1: this store serialises its writes anyway).
    import_batch: int = 256
    import_workers: int = 1

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
            check_provenance(it, what)
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
            if not is_id(item_id):
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

    def seal(self, timeout: float = 600.0) -> bool:
        """After a bulk write: make what was written searchable at the index's full recall
        (a store whose index is complete after each write has nothing to do). Returns False
        when ``timeout`` seconds were not enough (the items are stored all the same)."""
        return True

    def get(self, item_id: str) -> Item | None:
        return self._get(item_id) if is_id(item_id) else None

    def get_with_embedding(self, item_id: str) -> tuple[Item, np.ndarray] | None:
        """An item and its embedding in one read (a search by item needs both)."""
        return self._get_with_embedding(item_id) if is_id(item_id) else None

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        return self._get_embedding(item_id) if is_id(item_id) else None

    def get_image(self, item_id: str) -> tuple[bytes, str] | None:
        """The crop's bytes and media type; None for no such item. ``CropMissingError`` when
        the item exists but its crop file does not."""
        return self._get_image(item_id) if is_id(item_id) else None

    def delete(self, item_id: str) -> bool:
        """Remove an item from storage and index; False when there was none."""
        return self._delete(item_id) if is_id(item_id) else False

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
        people; an item without that label is a group of its own. ``UnknownGalleryError``
        when the gallery holds no item (the check costs nothing more on a non-empty answer).
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

    def track_vector(self, gallery: str, track_id: str, limit: int = 1000) -> np.ndarray | None:
        """A track as one query: the mean of its crops' embeddings (at most ``limit``, oldest
        first), normalised; None when the gallery has no such track. ``DegenerateQueryError``
        when they cancel out."""
        found = self.track(gallery, track_id, limit)
        return mean_direction([v for _, v in found]) if found else None

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

    def gallery_counts(self, gallery: str) -> dict[str, int]:
        """Items per camera of one gallery; empty for an unknown gallery."""
        check_gallery(gallery)
        return self._gallery_counts(gallery)

    def galleries(self) -> list[str]:
        """The galleries that hold at least one item, sorted."""
        return self._galleries()

    def list_tracks(
        self,
        gallery: str,
        *,
        camera_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[TrackSummary], str | None]:
        """The gallery's tracks, newest (by last time) first, a page of at most ``limit``, and
        the cursor of the next page (None on the last). ``camera_id``: only that camera's
        crops count; ``since``/``until``: tracks seen in that window (inclusive)."""
        check_gallery(gallery)
        if camera_id is not None:
            if not isinstance(camera_id, str) or not camera_id:
                raise StoreError("camera_id must be a non-empty string")
            self._check_text(camera_id, "camera_id")
        if since is not None:
            aware(since, "since")
        if until is not None:
            aware(until, "until")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= TRACKS_PAGE_MAX
        ):
            raise StoreError(f"limit must be an integer in [1, {TRACKS_PAGE_MAX}], not {limit!r}")
        after = None
        if cursor is not None:
            if not isinstance(cursor, str):
                raise StoreError("bad cursor: use the one a previous page returned")
            after = decode_cursor(cursor)
        rows = self._track_summaries(gallery, camera_id)
        if since is not None:
            rows = [t for t in rows if t.last >= since]
        if until is not None:
            rows = [t for t in rows if t.first <= until]
        return page_tracks(rows, after, limit)

    def delete_track(self, gallery: str, track_id: str) -> int:
        """Remove every item of one track of ``gallery`` (rows, index, crops); returns how many.
        Durable once it returns."""
        check_gallery(gallery)
        if not isinstance(track_id, str) or not track_id:
            raise StoreError("track_id must be a non-empty string")
        self._check_text(track_id, "track_id")
        return self._remove_all(Selection(gallery=gallery, track_id=track_id), 1000)

    def delete_range(
        self,
        gallery: str,
        *,
        camera_id: str | None = None,
        before: datetime | None = None,
        since: datetime | None = None,
    ) -> int:
        """Remove the items of ``gallery`` with ``since <= timestamp < before``, optionally of
        one camera; at least one of the three must be given. Returns how many."""
        check_gallery(gallery)
        if camera_id is None and before is None and since is None:
            raise StoreError("give camera_id, before or since: refusing to empty a gallery")
        if camera_id is not None:
            if not isinstance(camera_id, str) or not camera_id:
                raise StoreError("camera_id must be a non-empty string")
            self._check_text(camera_id, "camera_id")
        if before is not None:
            aware(before, "before")
        if since is not None:
            aware(since, "since")
        sel = Selection(gallery=gallery, camera_id=camera_id, since=since, before=before)
        return self._remove_all(sel, 1000)

    def expire(self, cutoff: datetime, gallery: str | None = None, batch: int = 1000) -> int:
        """Remove the items (of ``gallery``, or of all) whose timestamp is before ``cutoff``,
        ``batch`` at a time, each batch durable before the next: a sweep killed midway leaves
        whole items only (no orphan crop once the store reopens, no item without its crop),
        and the next sweep continues. Returns how many were removed."""
        aware(cutoff, "cutoff")
        if gallery is not None:
            check_gallery(gallery)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise StoreError(f"batch must be an integer >= 1, not {batch!r}")
        return self._remove_all(Selection(gallery=gallery, before=cutoff), batch)

    def _remove_all(self, sel: Selection, batch: int) -> int:
        removed = 0
        while True:
            n = self._remove_batch(sel, batch)
            removed += n
            if n < batch:
                return removed

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
    def _get_with_embedding(self, item_id: str) -> tuple[Item, np.ndarray] | None: ...

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
    def _galleries(self) -> list[str]: ...

    @abc.abstractmethod
    def _gallery_counts(self, gallery: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def _track_summaries(self, gallery: str, camera_id: str | None) -> list[TrackSummary]:
        """Every track of the gallery (of that camera's crops only, when given)."""

    @abc.abstractmethod
    def _remove_batch(self, sel: Selection, limit: int) -> int:
        """Remove at most ``limit`` items matching ``sel``, durably: rows and index first, then
        their crops. Returns how many were removed (fewer than ``limit``: none is left)."""

    @abc.abstractmethod
    def _iter_items(self, gallery: str, batch: int) -> Iterator[list[tuple[Item, np.ndarray]]]: ...

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
