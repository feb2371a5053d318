"""Uploaded crops: read within the size limit, decode and validate, embed through the batcher."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from fastapi import Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..budget import RequestPixels
from ..embedder import Overloaded
from ..errors import Problem
from ..imaging import ImageError
from ..runtime import Runtime

__all__ = ["check_room", "decode", "embed", "embed_upload", "overloaded", "read_upload"]


def overloaded(what: str) -> Problem:
    return Problem(
        503,
        f"the service is busy {what}; retry shortly",
        code="overloaded",
        headers={"Retry-After": "1"},
    )


def check_room(rt: Runtime, count: int) -> None:
    """Before anything is decoded: can ``count`` crops ever, and now, be embedded?"""
    if count > rt.embedder.queue_size:
        raise Problem(
            413,
            f"{count} images in one request; the embedding queue holds {rt.embedder.queue_size} "
            "(SONA_QUEUE_SIZE), so send fewer per request",
            code="too-many-images",
        )
    if not rt.embedder.has_room(count):
        rt.metrics.rejected.inc(count)
        raise overloaded("embedding")


async def read_upload(rt: Runtime, upload: UploadFile, label: str) -> bytes:
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


async def decode(
    rt: Runtime, data: bytes, label: str, request: RequestPixels
) -> tuple[str, torch.Tensor]:
    """(media type, crop at the network's input size); refusals become problem responses."""
    try:
        return await run_in_threadpool(rt.decode, data, request)
    except ImageError as exc:
        raise Problem(exc.status, f"{label}: {exc}", code=exc.code) from exc
    except Overloaded as exc:
        raise overloaded("decoding images") from exc


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def embed(rt: Runtime, crops: list[torch.Tensor], request: Request) -> np.ndarray:
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
        raise overloaded("embedding") from exc


async def embed_upload(rt: Runtime, request: Request, image: UploadFile) -> np.ndarray:
    """One uploaded crop: size check, validated decode, batched embedding."""
    check_room(rt, 1)
    data = await read_upload(rt, image, "image")
    _, crop = await decode(rt, data, "image", RequestPixels(rt.settings.max_request_pixels))
    return (await embed(rt, [crop], request))[0]
