"""``/gallery/tracks/{track_id}``: a footage track (its crops, camera, first and last time).
Searching by a track (the mean of its crops) is the store's ``track_vector``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ...schemas import TrackResponse
from ..deps import GalleryName, Rt, load_track

__all__ = ["router"]

router = APIRouter(tags=["gallery"])


@router.get(
    "/gallery/tracks/{track_id}",
    response_model=TrackResponse,
    summary="A track's crops (oldest first), camera, first and last time",
)
async def get_track(
    rt: Rt,
    track_id: Annotated[str, Path(max_length=128, description="the track_id its crops carry")],
    gallery: GalleryName = "default",
) -> TrackResponse:
    found = await load_track(rt, gallery, track_id)
    return TrackResponse.from_items(gallery, track_id, [item for item, _ in found])
