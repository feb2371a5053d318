"""``/gallery``: add crops, read, fetch and delete items, count them."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ...audit import note
from ...budget import RequestPixels
from ...errors import Problem
from ...schemas import GalleryCounts, GalleryItem, IngestResponse, ItemMeta
from ...store import NewItem
from ..deps import Caller, GalleryName, Rt, visible_item
from ..forms import StrictFormRoute
from ..uploads import check_room, decode, embed, read_upload

__all__ = ["router"]

router = APIRouter(tags=["gallery"], route_class=StrictFormRoute)


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
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number; nesting too deep
            raise Problem(
                422,
                "metadata is not usable JSON: numbers of at most 4,300 digits, nesting of at "
                "most a few hundred levels",
                code="invalid-metadata",
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
    summary="Add crops to a gallery; answers only once they are durable",
)
async def add_items(
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
            "track_id, and where footage says so source (file name or stream URL without "
            "credentials), frame (number) and box ([x, y, width, height] in the frame's "
            "pixels); overrides the single fields"
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
    check_room(rt, len(images))  # overloaded? say so before decoding anything
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
    pixels = RequestPixels(rt.settings.max_request_pixels)
    for index, upload in enumerate(images):  # validate everything before storing anything
        label = f"image {index} ({upload.filename or 'unnamed'})"
        data = await read_upload(rt, upload, label)
        blobs.append(data)
        decoded.append(await decode(rt, data, label, pixels))  # only the small crop is kept
    vectors = await embed(rt, [crop for _, crop in decoded], request)
    new = [
        NewItem(
            embedding=vector,
            camera_id=m.camera_id,
            timestamp=m.timestamp,
            image=blob,
            image_type=media_type,
            identity=m.identity,
            track_id=m.track_id,
            source=m.source,
            frame=m.frame,
            box=m.box,
        )
        for vector, m, blob, (media_type, _) in zip(vectors, metas, blobs, decoded, strict=True)
    ]
    note(request, gallery=gallery, items=None)
    stored = await run_in_threadpool(rt.store.add, gallery, new)  # errors: see errors.py
    note(request, items=[i.item_id for i in stored])
    body = IngestResponse(items=[GalleryItem.from_item(i) for i in stored], count=len(stored))
    return JSONResponse(body.model_dump(mode="json"), status_code=201)


@router.get(
    "/gallery",
    response_model=GalleryCounts,
    summary="Item counts per gallery and camera",
)
async def count_items(rt: Rt, who: Caller) -> GalleryCounts:
    counts = await run_in_threadpool(rt.store.counts)
    return GalleryCounts.from_counts({g: c for g, c in counts.items() if who.sees(g)})


@router.get(
    "/gallery/{item_id}",
    response_model=GalleryItem,
    summary="One item's metadata",
)
async def get_item(rt: Rt, who: Caller, request: Request, item_id: str) -> GalleryItem:
    note(request, items=[item_id])
    item = await visible_item(rt, who, item_id)
    note(request, gallery=item.gallery)
    return GalleryItem.from_item(item)


@router.get(
    "/gallery/{item_id}/image",
    summary="The item's crop as uploaded",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_item_image(rt: Rt, who: Caller, request: Request, item_id: str) -> Response:
    note(request, items=[item_id])
    note(request, gallery=(await visible_item(rt, who, item_id)).gallery)
    found = await run_in_threadpool(rt.store.get_image, item_id)
    if found is None:
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    data, media_type = found
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=media_type, headers=headers)


@router.delete(
    "/gallery/{item_id}",
    status_code=204,
    summary="Delete an item from storage and index",
    response_class=Response,
)
async def delete_item(rt: Rt, who: Caller, request: Request, item_id: str) -> Response:
    note(request, items=[item_id])
    note(request, gallery=(await visible_item(rt, who, item_id)).gallery)
    if not await run_in_threadpool(rt.store.delete, item_id):
        raise Problem(404, f"no gallery item {item_id}", code="item-not-found")
    note(request, removed=1)
    return Response(status_code=204)


# -- search ---------------------------------------------------------------------------------
