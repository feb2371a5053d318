"""``/gallery/tracks/{track_id}``: a footage track (its crops, camera, first and last time), and
the track as one query: the mean of its crops' embeddings, normalised (multi-shot re-ID)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool

from ...audit import note
from ...errors import Problem
from ...runtime import Runtime
from ...schemas import TrackResponse
from ...store import Item
from ..deps import GalleryName, Rt

__all__ = ["MAX_TRACK_ITEMS", "load_track", "router", "track_query"]

router = APIRouter(tags=["gallery"])

#: Crops read for one track; a footage track holds a few (``sona footage --crops-per-track``).
MAX_TRACK_ITEMS = 1000


async def load_track(rt: Runtime, gallery: str, track_id: str) -> list[tuple[Item, np.ndarray]]:
    """The track's items with their embeddings, or a 404 problem."""
    if not track_id or len(track_id) > 128 or not track_id.isprintable():
        raise Problem(404, "no track with this id", code="track-not-found")
    found = await run_in_threadpool(rt.store.track, gallery, track_id, MAX_TRACK_ITEMS)
    if not found:
        raise Problem(404, f"no track {track_id!r} in gallery {gallery!r}", code="track-not-found")
    return found


def track_query(found: list[tuple[Item, np.ndarray]]) -> np.ndarray:
    """The mean of the crops' unit vectors, back on the unit sphere."""
    mean = np.mean(np.stack([v for _, v in found]), axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-12:  # opposite vectors cancel: no direction to search in
        raise Problem(422, "the track's crops average to nothing", code="invalid-parameters")
    return (mean / norm).astype(np.float32)


@router.get(
    "/gallery/tracks/{track_id}",
    response_model=TrackResponse,
    summary="A track's crops (oldest first), camera, first and last time",
)
async def get_track(
    rt: Rt,
    request: Request,
    track_id: Annotated[str, Path(max_length=128, description="the track_id its crops carry")],
    gallery: GalleryName = "default",
) -> TrackResponse:
    note(request, gallery=gallery, track_id=track_id[:128])
    found = await load_track(rt, gallery, track_id)  # another gallery's: refused before this
    note(request, items=[item.item_id for item, _ in found])
    return TrackResponse.from_items(gallery, track_id, [item for item, _ in found])
