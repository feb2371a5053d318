"""What routes depend on: the running service, the gallery-name parameter, and the checks
and lookups several route modules share (route modules do not import each other)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import Problem
from ..runtime import Runtime
from ..store import GALLERY_NAME, ITEM_ID, RESERVED_IDS, Item

__all__ = [
    "GALLERY_PATTERN",
    "MAX_TRACK_ITEMS",
    "GalleryName",
    "Rt",
    "check_item_id",
    "check_track_id",
    "load_track",
    "runtime",
]

#: Crops read for one track; a footage track holds a few (``sona footage --crops-per-track``).
MAX_TRACK_ITEMS = 1000

# Pydantic matches ``pattern`` anywhere in the value: anchor it, or "../x" would pass.
GALLERY_PATTERN = f"^{GALLERY_NAME.pattern}$"
GalleryName = Annotated[
    str,
    Query(
        pattern=GALLERY_PATTERN,
        max_length=64,
        description="gallery name: letters, digits, '_' and '-', 1 to 64 characters",
    ),
]


def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise Problem(503, "the service is starting", headers={"Retry-After": "5"})
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


def check_item_id(item_id: str) -> None:
    """Not an id the store gives out (``tracks`` names a route): no such item."""
    if not ITEM_ID.fullmatch(item_id) or item_id in RESERVED_IDS:
        raise Problem(404, "no gallery item with this id", code="item-not-found")


def check_track_id(track_id: str) -> None:
    if not track_id or len(track_id) > 128 or not track_id.isprintable():
        raise Problem(404, "no track with this id", code="track-not-found")


async def load_track(rt: Runtime, gallery: str, track_id: str) -> list[tuple[Item, np.ndarray]]:
    """The track's items with their embeddings, or a 404 problem."""
    check_track_id(track_id)
    found = await run_in_threadpool(rt.store.track, gallery, track_id, MAX_TRACK_ITEMS)
    if not found:
        raise Problem(404, f"no track {track_id!r} in gallery {gallery!r}", code="track-not-found")
    return found
