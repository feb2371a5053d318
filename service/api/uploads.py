"""Uploaded crops: read within the size limit, decode and validate, embed through the batcher."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from fastapi import Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..embedder import Overloaded
from ..errors import Problem
from ..imaging import DecodedImage, ImageError
from ..runtime import Runtime

__all__ = ["decode", "embed", "embed_upload", "read_upload"]


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


async def decode(rt: Runtime, data: bytes, label: str) -> tuple[DecodedImage, torch.Tensor]:
    try:
        return await run_in_threadpool(rt.decode, data)
    except ImageError as exc:
        raise Problem(exc.status, f"{label}: {exc}", code=exc.code) from exc


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
        raise Problem(
            503,
            "the service is busy embedding; retry shortly",
            code="overloaded",
            headers={"Retry-After": "1"},
        ) from exc


async def embed_upload(rt: Runtime, request: Request, image: UploadFile) -> np.ndarray:
    """One uploaded crop: size check, validated decode, batched embedding."""
    data = await read_upload(rt, image, "image")
    _, crop = await decode(rt, data, "image")
    return (await embed(rt, [crop], request))[0]
