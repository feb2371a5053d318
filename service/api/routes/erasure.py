"""Erasure on request: every crop of a track, or a camera's items in a time range, in one
call (admin keys only). Each answers how many items it removed, once that is durable and
their crops are gone from disk."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, Field

from ...audit import note
from ...errors import Problem
from ..deps import GalleryName, Rt

__all__ = ["ErasureResponse", "router"]

router = APIRouter(tags=["gallery"])


class ErasureResponse(BaseModel):
    removed: int = Field(description="items removed, with their crops, durably")
    gallery: str
    track_id: str | None = None
    camera_id: str | None = None
    since: AwareDatetime | None = None
    before: AwareDatetime | None = None


@router.delete(
    "/gallery/tracks/{track_id}",
    response_model=ErasureResponse,
    response_model_exclude_none=True,
    summary="Erase every crop of a track (admin); answers once it is durable",
)
async def erase_track(
    rt: Rt,
    request: Request,
    track_id: Annotated[str, Path(max_length=128, description="the track_id its crops carry")],
    gallery: GalleryName = "default",
) -> ErasureResponse:
    note(request, gallery=gallery, track_id=track_id)
    if not track_id.isprintable():
        raise Problem(404, "no track with this id", code="track-not-found")
    removed = await run_in_threadpool(rt.store.delete_track, gallery, track_id)
    note(request, removed=removed)
    if not removed:
        raise Problem(404, f"no track {track_id!r} in gallery {gallery!r}", code="track-not-found")
    return ErasureResponse(removed=removed, gallery=gallery, track_id=track_id)


@router.delete(
    "/gallery",
    response_model=ErasureResponse,
    response_model_exclude_none=True,
    summary="Erase a camera's items in a time range (admin): since <= timestamp < before",
)
async def erase_range(
    rt: Rt,
    request: Request,
    gallery: GalleryName,
    camera_id: Annotated[
        str | None, Query(min_length=1, max_length=256, description="only this camera")
    ] = None,
    since: Annotated[AwareDatetime | None, Query(description="from this time, inclusive")] = None,
    before: Annotated[AwareDatetime | None, Query(description="up to this time, exclusive")] = None,
) -> ErasureResponse:
    filters = {"camera_id": camera_id, "since": since, "before": before}
    note(request, gallery=gallery, filters={k: str(v) for k, v in filters.items() if v})
    if camera_id is None and since is None and before is None:
        raise Problem(
            422,
            "give camera_id, since or before (or several): erasure never empties a whole gallery",
            code="invalid-parameters",
        )
    if since is not None and before is not None and since >= before:
        raise Problem(422, "since must be before before", code="invalid-parameters")
    removed = await run_in_threadpool(
        lambda: rt.store.delete_range(gallery, camera_id=camera_id, since=since, before=before)
    )
    note(request, removed=removed)
    return ErasureResponse(removed=removed, gallery=gallery, **filters)
