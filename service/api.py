"""The HTTP routes: embed, gallery, search, health, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .embedder import Overloaded
from .errors import Problem
from .imaging import ImageError
from .runtime import Runtime
from .schemas import (
    EmbedResponse,
    GalleryCounts,
    GalleryItem,
    IngestResponse,
    ProblemDetails,
    SearchResponse,
    SearchResult,
)
from .store import GALLERY_NAME, Hit, NewItem, SearchFilter, StoreError, StoreFullError

__all__ = ["health_router", "router"]

ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
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
PROBLEMS = {
    status: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for status in (400, 401, 404, 413, 415, 422, 429, 503, 507)
}


def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise Problem(503, "the service is starting", headers={"Retry-After": "5"})
    return rt


def require_key(request: Request) -> None:
    """``Authorization: Bearer KEY`` against every configured key, in constant time."""
    keys = request.app.state.settings.keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    # Digests have one length, so compare_digest never returns early on a length mismatch;
    # no early exit either: the time does not depend on which key (if any) matched.
    digest = hashlib.sha256(presented).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    if not matched:
        raise Problem(
            401,
            "a valid API key is required: send 'Authorization: Bearer <key>'",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="sona"'},
        )


Rt = Annotated[Runtime, Depends(runtime)]
router = APIRouter(dependencies=[Depends(require_key)], responses=PROBLEMS)
health_router = APIRouter(tags=["operations"])


# -- helpers --------------------------------------------------------------------------------


async def _read_upload(rt: Runtime, upload: UploadFile, label: str) -> bytes:
    limit = rt.settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise Problem(
            413,
            f"{label} is {upload.size} bytes; the limit is {limit} bytes per image",
            code="image-too-large",
        )
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise Problem(
            413, f"{label} is over the limit of {limit} bytes per image", code="image-too-large"
        )
    return data


async def _decode(rt: Runtime, data: bytes, label: str):
    try:
        return await run_in_threadpool(rt.decode, data)
    except ImageError as exc:
        raise Problem(exc.status, f"{label}: {exc}", code=exc.code) from exc


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _embed(rt: Runtime, crops: list, request: Request) -> np.ndarray:
    """Embed through the batcher; if the client leaves first, its crops leave the queue."""
    work = asyncio.ensure_future(rt.embedder.embed_many(crops))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()  # cancelled futures are skipped by the batcher: the network never sees them
        raise Problem(
            499,
            "the client closed the connection",
            title="Client Closed Request",
            code="client-closed-request",
        )
    try:
        return work.result()
    except Overloaded as exc:
        raise Problem(
            503,
            "the service is busy embedding; retry shortly",
            code="overloaded",
            headers={"Retry-After": "1"},
        ) from exc


async def _embed_upload(rt: Runtime, request: Request, image: UploadFile) -> np.ndarray:
    """One uploaded crop: size check, validated decode, batched embedding."""
    data = await _read_upload(rt, image, "image")
    _, crop = await _decode(rt, data, "image")
    return (await _embed(rt, [crop], request))[0]


def _check_item_id(item_id: str) -> None:
    if not ITEM_ID.fullmatch(item_id):
        raise Problem(404, "no gallery item with this id", code="item-not-found")


# -- embedding ------------------------------------------------------------------------------


@router.post(
    "/embed",
    response_model=EmbedResponse,
    tags=["embedding"],
    summary="Embed one crop; the returned query_id can be searched with GET /search",
)
async def post_embed(
    rt: Rt,
    request: Request,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop")],
) -> EmbedResponse:
    vector = await _embed_upload(rt, request, image)
    query_id = rt.queries.put(vector)
    return EmbedResponse(
        query_id=query_id,
        embedding=vector.tolist(),
        dim=len(vector),
        model=rt.model_id,
        expires_in_s=rt.settings.query_ttl_s,
    )


# -- gallery --------------------------------------------------------------------------------


class ItemMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    camera_id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    identity: str | None = Field(None, min_length=1, max_length=128)
    track_id: str | None = Field(None, min_length=1, max_length=128)


def _metadata(count: int, shared: dict, metadata: str | None) -> list[ItemMeta]:
    """Per-image metadata: the shared form fields, overridden by the JSON array's objects."""
    per_image: list[dict] = [{} for _ in range(count)]
    if metadata is not None:
        try:
            parsed = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise Problem(
                422, f"metadata is not valid JSON: {exc.msg}", code="invalid-metadata"
            ) from exc
        if not isinstance(parsed, list) or not all(isinstance(o, dict) for o in parsed):
            raise Problem(
                422,
                "metadata must be a JSON array of objects, one per image",
                code="invalid-metadata",
            )
        if len(parsed) != count:
            raise Problem(
                422,
                f"metadata has {len(parsed)} objects for {count} images",
                code="invalid-metadata",
            )
        per_image = parsed
    items = []
    base = {k: v for k, v in shared.items() if v is not None}
    for index, own in enumerate(per_image):
        try:
            items.append(ItemMeta.model_validate(base | own))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            raise Problem(422, f"image {index}: {problems}", code="invalid-metadata") from exc
    return items


@router.post(
    "/gallery",
    status_code=201,
    response_model=IngestResponse,
    tags=["gallery"],
    summary="Add crops to a gallery; answers only once they are durable",
)
async def post_gallery(
    rt: Rt,
    request: Request,
    images: Annotated[list[UploadFile], File(description="one or more JPEG, PNG or WebP crops")],
    camera_id: Annotated[str | None, Form(description="camera of every image")] = None,
    timestamp: Annotated[
        str | None,
        Form(description="ISO 8601 time with offset of every image, e.g. 2024-05-01T12:00:00Z"),
    ] = None,
    identity: Annotated[str | None, Form(description="known identity label, optional")] = None,
    track_id: Annotated[str | None, Form(description="tracker id, optional")] = None,
    metadata: Annotated[
        str | None,
        Form(
            description="JSON array, one object per image, with camera_id, timestamp, identity, "
            "track_id; overrides the single fields"
        ),
    ] = None,
    gallery: GalleryName = "default",
) -> JSONResponse:
    if len(images) > rt.settings.max_images_per_request:
        raise Problem(
            413,
            f"{len(images)} images in one request; the limit is "
            f"{rt.settings.max_images_per_request}",
            code="too-many-images",
        )
    metas = _metadata(
        len(images),
        {
            "camera_id": camera_id,
            "timestamp": timestamp,
            "identity": identity,
            "track_id": track_id,
        },
        metadata,
    )
    blobs, decoded = [], []
    for index, upload in enumerate(images):  # validate everything before storing anything
        label = f"image {index} ({upload.filename or 'unnamed'})"
        data = await _read_upload(rt, upload, label)
        blobs.append(data)
        decoded.append(await _decode(rt, data, label))
    vectors = await _embed(rt, [crop for _, crop in decoded], request)
    new = [
        NewItem(
            embedding=vector,
            camera_id=m.camera_id,
            timestamp=m.timestamp,
            image=blob,
            image_type=image.media_type,
            identity=m.identity,
            track_id=m.track_id,
        )
        for vector, m, blob, (image, _) in zip(vectors, metas, blobs, decoded, strict=True)
    ]
    try:
        stored = await run_in_threadpool(rt.store.add, gallery, new)
    except StoreFullError as exc:
        raise Problem(
            507,
            f"the gallery's disk is full; nothing was stored ({exc})",
            code="insufficient-storage",
        ) from exc
    except StoreError as exc:
        raise Problem(422, str(exc), code="invalid-item") from exc
    body = IngestResponse(items=[GalleryItem.from_item(i) for i in stored], count=len(stored))
    return JSONResponse(body.model_dump(mode="json"), status_code=201)


@router.get(
    "/gallery",
    response_model=GalleryCounts,
    tags=["gallery"],
    summary="Item counts per gallery and camera",
)
async def get_galleries(rt: Rt) -> GalleryCounts:
    counts = await run_in_threadpool(rt.store.counts)
    return GalleryCounts.from_counts(counts)


@router.get(
    "/gallery/{item_id}",
    response_model=GalleryItem,
    tags=["gallery"],
    summary="One item's metadata",
)
async def get_item(rt: Rt, item_id: str) -> GalleryItem:
    _check_item_id(item_id)
    item = await run_in_threadpool(rt.store.get, item_id)
    if item is None:
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    return GalleryItem.from_item(item)


@router.get(
    "/gallery/{item_id}/image",
    tags=["gallery"],
    summary="The item's crop as uploaded",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_item_image(rt: Rt, item_id: str) -> Response:
    _check_item_id(item_id)
    found = await run_in_threadpool(rt.store.get_image, item_id)
    if found is None:
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    data, media_type = found
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=media_type, headers=headers)


@router.delete(
    "/gallery/{item_id}",
    status_code=204,
    tags=["gallery"],
    summary="Delete an item from storage and index",
    response_class=Response,
)
async def delete_item(rt: Rt, item_id: str) -> Response:
    _check_item_id(item_id)
    if not await run_in_threadpool(rt.store.delete, item_id):
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    return Response(status_code=204)


# -- search ---------------------------------------------------------------------------------


class GroupBy(StrEnum):
    identity = "identity"
    track = "track"


def _names(values: list[str] | None) -> frozenset[str] | None:
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
        self.cameras = _names(cameras)
        self.exclude_cameras = _names(exclude_camera) or frozenset()
        self.since: datetime | None = since
        self.until: datetime | None = until
        self.group_by = group_by.value if group_by else None


async def _search(
    rt: Runtime,
    vector: np.ndarray,
    params: SearchParams,
    gallery: str,
    exclude_item: str | None = None,
) -> SearchResponse:
    if params.k > rt.settings.max_k:
        raise Problem(
            422, f"k is {params.k}; at most {rt.settings.max_k}", code="invalid-parameters"
        )
    if not await run_in_threadpool(rt.store.count, gallery):
        raise Problem(
            404, f"gallery {gallery!r} does not exist (it has no items)", code="gallery-not-found"
        )
    where = SearchFilter(
        cameras=params.cameras,
        exclude_cameras=params.exclude_cameras,
        since=params.since,
        until=params.until,
        exclude_item=exclude_item,
    )
    start = time.perf_counter()
    hits: list[Hit] = await run_in_threadpool(
        rt.store.search, gallery, vector, params.k, where, params.group_by
    )
    took = time.perf_counter() - start
    rt.metrics.search_seconds.observe(took)
    results = [SearchResult.from_hit(rank, hit) for rank, hit in enumerate(hits, start=1)]
    return SearchResponse(results=results, gallery=gallery, k=params.k, took_ms=took * 1000)


@router.get(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    summary="Search a gallery by a query_id from POST /embed or by a gallery item",
)
async def get_search(
    rt: Rt,
    params: Annotated[SearchParams, Depends()],
    query_id: Annotated[str | None, Query(max_length=64, description="from POST /embed")] = None,
    item_id: Annotated[
        str | None, Query(max_length=64, description="a gallery item; it is not returned itself")
    ] = None,
) -> SearchResponse:
    if (query_id is None) == (item_id is None):
        raise Problem(422, "give exactly one of query_id and item_id", code="invalid-parameters")
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
    _check_item_id(item_id)
    item = await run_in_threadpool(rt.store.get, item_id)
    vector = await run_in_threadpool(rt.store.get_embedding, item_id)
    if item is None or vector is None:
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    return await _search(rt, vector, params, params.gallery or item.gallery, exclude_item=item_id)


@router.post(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    summary="Search a gallery with an uploaded crop",
)
async def post_search(
    rt: Rt,
    request: Request,
    params: Annotated[SearchParams, Depends()],
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop")],
) -> SearchResponse:
    vector = await _embed_upload(rt, request, image)
    return await _search(rt, vector, params, params.gallery or "default")


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
async def metrics(rt: Rt) -> Response:
    rt.metrics.set_gallery_sizes(await run_in_threadpool(rt.store.counts))
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- health (open even when API keys are set) -----------------------------------------------


@health_router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@health_router.get(
    "/readyz",
    summary="Readiness: model loaded and warmed, gallery index ready",
    responses={503: {"model": ProblemDetails}},
)
async def readyz(request: Request) -> JSONResponse:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise Problem(
            503,
            "not ready: the model or the gallery index is still loading",
            headers={"Retry-After": "5"},
        )
    return JSONResponse(
        {
            "status": "ready",
            "model": rt.model_id,
            "device": str(rt.device),
            "encoder": rt.embedder.encoder.name,
            "demo": bool(rt.model_meta.get("demo", False)),
            "store": rt.settings.store,
            "index": rt.settings.index,
        }
    )
