"""``/gallery/tracks``: a gallery's footage tracks, newest first, a page at a time (to browse
what a camera saw), and ``/gallery/tracks/{track_id}``: one track (its crops with their
provenance, camera, first and last time). Searching by a track (the mean of its crops) is
the store's ``track_vector``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime

from ...audit import note
from ...errors import Problem
from ...schemas import TrackList, TrackResponse, TrackSummaryOut
from ...store import StoreError
from ...store.types import decode_cursor
from ..deps import GalleryName, Rt, load_track

__all__ = ["router"]

router = APIRouter(tags=["gallery"])


@router.get(
    "/gallery/tracks",
    response_model=TrackList,
    summary="The gallery's tracks (id, camera, first and last time, crops), newest first",
)
async def list_tracks(
    rt: Rt,
    request: Request,
    gallery: GalleryName = "default",
    camera_id: Annotated[
        str | None, Query(min_length=1, max_length=128, description="only this camera")
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="tracks seen at or after (ISO 8601)")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="tracks seen at or before (ISO 8601)")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="tracks per page")] = 50,
) -> TrackList:
    note(request, gallery=gallery)
    if since is not None and until is not None and since > until:
        raise Problem(422, "since is after until", code="invalid-parameters")
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except StoreError:
            raise Problem(
                400, "bad cursor: use the next_cursor of a previous page", code="invalid-cursor"
            ) from None
    tracks, after = await run_in_threadpool(
        rt.store.list_tracks,
        gallery,
        camera_id=camera_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return TrackList(
        gallery=gallery,
        tracks=[TrackSummaryOut.from_summary(t) for t in tracks],
        next_cursor=after,
    )


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
