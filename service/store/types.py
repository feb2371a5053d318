"""What the gallery stores take and give: items, filters, tracks, errors, and their checks.

Kept apart from the interface (``base.py``) so that both backends and the API share one
definition of each value and one way to validate it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

#: Gallery names: letters, digits, '_' and '-', 1 to 64 characters.
GALLERY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Item ids: what the stores give out (uuid4 hex) and what an import may bring.
ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A media type such as ``image/jpeg`` (RFC 6838 characters).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")

GroupBy = Literal["identity", "track"]
#: Longest provenance source (a file name or a stream URL), in UTF-8 bytes.
SOURCE_MAX = 2048
#: Most tracks one ``list_tracks`` page may hold.
TRACKS_PAGE_MAX = 1000


class StoreError(RuntimeError):
    """The store cannot do what was asked (a bad gallery name, a wrong dimension, ...)."""


class UnknownGalleryError(StoreError):
    """The gallery holds no item (it never did, or all were removed)."""


class DegenerateQueryError(StoreError):
    """A query vector with no direction (a track whose crops' embeddings cancel out)."""


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
    source: str | None = None  # footage file name or stream URL (without credentials)
    frame: int | None = None  # frame number in the source
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the frame's pixels

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
            source=self.source,
            frame=self.frame,
            box=None if self.box is None else tuple(int(v) for v in self.box),
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
    source: str | None = None
    frame: int | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h

    @property
    def provenance(self) -> bool:
        return self.source is not None or self.frame is not None or self.box is not None


@dataclass(frozen=True)
class TrackSummary:
    """One track of a gallery: its camera (of its latest crop), first and last time, crops."""

    track_id: str
    gallery: str
    camera_id: str
    first: datetime
    last: datetime
    count: int


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
class Selection:
    """Items to remove: of a gallery (all when None), of one camera or track, with
    ``since <= timestamp < before``; a field left None does not restrict."""

    gallery: str | None = None
    camera_id: str | None = None
    track_id: str | None = None
    since: datetime | None = None
    before: datetime | None = None


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


#: Words that name routes under ``/gallery/`` (``/gallery/tracks``): never an item's id.
RESERVED_IDS = frozenset({"tracks"})


def is_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and ITEM_ID.fullmatch(value) is not None
        and value not in RESERVED_IDS
    )


def mean_direction(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of unit vectors, back on the unit sphere: a track as one query (multi-shot)."""
    mean = np.mean(np.stack(list(vectors)), axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-12:  # opposite vectors cancel: no direction to search in
        raise DegenerateQueryError("the track's crops average to nothing")
    return (mean / norm).astype(np.float32)


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_provenance(it: NewItem, what: str) -> None:
    """Source: non-empty text; frame: an integer >= 0; box: four integers, w and h > 0."""
    if it.source is not None:
        if not isinstance(it.source, str) or not it.source:
            raise StoreError(f"{what}: source must be a non-empty string or None")
        try:
            size = len(it.source.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise StoreError(f"{what}: source is not valid Unicode text") from e
        if size > SOURCE_MAX:
            raise StoreError(f"{what}: source is longer than {SOURCE_MAX} bytes")
    if it.frame is not None and (not is_int(it.frame) or not 0 <= it.frame < 2**62):
        raise StoreError(f"{what}: frame must be an integer >= 0 or None")
    if it.box is not None:
        box = it.box
        if (
            not isinstance(box, tuple | list)
            or len(box) != 4
            or not all(is_int(v) and abs(int(v)) < 2**31 for v in box)
        ):
            raise StoreError(f"{what}: box must be four integers (x, y, w, h) or None")
        if box[2] <= 0 or box[3] <= 0:
            raise StoreError(f"{what}: box width and height must be > 0")


def encode_cursor(last: float, track_id: str) -> str:
    """An opaque cursor: where the next page of tracks starts (after this one)."""
    raw = json.dumps([last, track_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last, track_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as e:
        raise StoreError("bad cursor: use the one a previous page returned") from e
    if not isinstance(last, float | int) or isinstance(last, bool) or not isinstance(track_id, str):
        raise StoreError("bad cursor: use the one a previous page returned")
    return float(last), track_id


def page_tracks(
    rows: Sequence[TrackSummary], after: tuple[float, str] | None, limit: int
) -> tuple[list[TrackSummary], str | None]:
    """Newest (by last time) first, ties by track id; the page after ``after`` and the cursor
    of the next one (None on the last page)."""
    ordered = sorted(rows, key=lambda t: (-t.last.timestamp(), t.track_id))
    if after is not None:
        last, tid = after
        ordered = [t for t in ordered if (-t.last.timestamp(), t.track_id) > (-last, tid)]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, encode_cursor(page[-1].last.timestamp(), page[-1].track_id) if more else None
