"""``/search``: a gallery searched by a query id, a gallery item, or an uploaded crop."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime

from ...errors import Problem
from ...runtime import Runtime
from ...schemas import EmptyReason, SearchResponse, SearchResult
from ...store import DegenerateQueryError, GroupBy, Hit, SearchFilter
from ..deps import GALLERY_PATTERN, MAX_TRACK_ITEMS, Rt, check_item_id, check_track_id
from ..uploads import embed_upload

__all__ = ["SearchParams", "camera_names", "empty_reason", "router"]

router = APIRouter(tags=["search"])


def camera_names(values: list[str] | None) -> frozenset[str] | None:
    """Accept repeated parameters and comma-separated lists alike."""
    if not values:
        return None
    names = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    return names or None


class SearchParams:
    """The parameters GET and POST /search share."""

    def __init__(
        self,
        k: Annotated[int, Query(ge=1, description="results wanted (at most SONA_MAX_K)")] = 10,
        gallery: Annotated[
            str | None,
            Query(
                pattern=GALLERY_PATTERN,
                max_length=64,
                description="gallery to search (default: 'default', or the item's own)",
            ),
        ] = None,
        cameras: Annotated[
            list[str] | None, Query(description="only these cameras (repeat or comma-separate)")
        ] = None,
        exclude_camera: Annotated[
            list[str] | None, Query(description="not these cameras (repeat or comma-separate)")
        ] = None,
        since: Annotated[AwareDatetime | None, Query(description="ISO 8601, inclusive")] = None,
        until: Annotated[AwareDatetime | None, Query(description="ISO 8601, inclusive")] = None,
        group_by: Annotated[
            GroupBy | None,
            Query(description="best item per identity or per track: k distinct people"),
        ] = None,
    ) -> None:
        if since is not None and until is not None and since > until:
            raise Problem(422, "since is after until", code="invalid-parameters")
        self.k = k
        self.gallery = gallery
        self.cameras = camera_names(cameras)
        self.exclude_cameras = camera_names(exclude_camera) or frozenset()
        self.since: datetime | None = since
        self.until: datetime | None = until
        self.group_by = group_by


async def _search(
    rt: Runtime,
    vector: np.ndarray,
    params: SearchParams,
    gallery: str,
    exclude_item: str | None = None,
    exclude_track: str | None = None,
) -> SearchResponse:
    if params.k > rt.settings.max_k:
        raise Problem(
            422, f"k is {params.k}; at most {rt.settings.max_k}", code="invalid-parameters"
        )
    where = SearchFilter(
        cameras=params.cameras,
        exclude_cameras=params.exclude_cameras,
        since=params.since,
        until=params.until,
        exclude_item=exclude_item,
        exclude_track=exclude_track,
    )
    start = time.perf_counter()
    # an unknown gallery: the store's UnknownGalleryError, a 404 problem (errors.py)
    hits: list[Hit] = await run_in_threadpool(
        rt.store.search, gallery, vector, params.k, where, params.group_by
    )
    took = time.perf_counter() - start
    rt.metrics.search_seconds.observe(took)
    results = [SearchResult.from_hit(rank, hit) for rank, hit in enumerate(hits, start=1)]
    answer = SearchResponse(results=results, gallery=gallery, k=params.k, took_ms=took * 1000)
    if not results:
        cameras = await run_in_threadpool(rt.store.gallery_counts, gallery)
        answer.empty_reason = empty_reason(gallery, cameras, where)
    return answer


def empty_reason(gallery: str, cameras: dict[str, int], where: SearchFilter) -> EmptyReason:
    """The filters' shares of an empty answer, from the per-camera counts. Camera filters and
    the query item are counted exactly; the time window took whatever they left, since camera
    and time filters return every item that passes them."""
    held = sum(cameras.values())
    removed: dict[str, int] = {}
    left = dict(cameras)
    if where.cameras is not None:
        removed["cameras"] = sum(n for c, n in left.items() if c not in where.cameras)
        left = {c: n for c, n in left.items() if c in where.cameras}
    if where.exclude_cameras:
        removed["exclude_camera"] = sum(n for c, n in left.items() if c in where.exclude_cameras)
        left = {c: n for c, n in left.items() if c not in where.exclude_cameras}
    remaining = sum(left.values())
    if where.exclude_item is not None and remaining:
        removed["query_item"] = 1
        remaining -= 1
    if where.since is not None or where.until is not None:
        removed["since_until"] = remaining
        remaining = 0
    parts = [f"{n} by {name}" for name, n in removed.items() if n]
    detail = f"gallery {gallery!r} holds {held} item{'s' if held != 1 else ''}"
    detail += f"; the filters removed {', '.join(parts)}" if parts else ""
    if remaining:
        detail += f"; {remaining} passed the filters but none was found near enough"
    return EmptyReason(gallery_items=held, removed_by=removed, detail=detail)


@router.get(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_unset=True,  # empty_reason only on an empty answer
    summary="Search a gallery by a query_id from POST /embed, a gallery item or a whole track",
)
async def search(
    rt: Rt,
    params: Annotated[SearchParams, Depends()],
    query_id: Annotated[str | None, Query(max_length=64, description="from POST /embed")] = None,
    item_id: Annotated[
        str | None, Query(max_length=64, description="a gallery item; it is not returned itself")
    ] = None,
    track_id: Annotated[
        str | None,
        Query(
            max_length=128,
            description="a track of the gallery: the mean of its crops' embeddings, normalised; "
            "its own crops are not returned",
        ),
    ] = None,
) -> SearchResponse:
    if sum(v is not None for v in (query_id, item_id, track_id)) != 1:
        raise Problem(
            422, "give exactly one of query_id, item_id and track_id", code="invalid-parameters"
        )
    if track_id is not None:
        gallery = params.gallery or "default"
        check_track_id(track_id)
        try:
            track = await run_in_threadpool(
                rt.store.track_vector, gallery, track_id, MAX_TRACK_ITEMS
            )
        except DegenerateQueryError as exc:
            raise Problem(422, str(exc), code="invalid-parameters") from exc
        if track is None:
            raise Problem(
                404, f"no track {track_id!r} in gallery {gallery!r}", code="track-not-found"
            )
        return await _search(rt, track, params, gallery, exclude_track=track_id)
    if query_id is not None:
        vector = rt.queries.get(query_id)
        if vector is None:
            raise Problem(
                404,
                f"query_id unknown or expired (kept {rt.settings.query_ttl_s:g} s "
                "after POST /embed)",
                code="query-not-found",
            )
        return await _search(rt, vector, params, params.gallery or "default")
    check_item_id(item_id)
    found = await run_in_threadpool(rt.store.get_with_embedding, item_id)
    if found is None:
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    item, vector = found
    return await _search(rt, vector, params, params.gallery or item.gallery, exclude_item=item_id)


@router.post(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_unset=True,
    summary="Search a gallery with an uploaded crop",
)
async def search_by_image(
    rt: Rt,
    request: Request,
    params: Annotated[SearchParams, Depends()],
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop")],
) -> SearchResponse:
    vector = await embed_upload(rt, request, image)
    return await _search(rt, vector, params, params.gallery or "default")
