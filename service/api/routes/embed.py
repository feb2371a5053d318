"""``POST /embed``: crops' embeddings, and query ids to search with later.

One ``image`` part answers one vector (``EmbedResponse``). Several ``image`` parts (up to
``SONA_MAX_IMAGES_PER_REQUEST``), or ``batch=true``, answer a list in the order sent
(``EmbedBatchResponse``): an image that cannot be read or decoded gets its own problem
details and the others their vectors, unless ``all_or_nothing=true`` asks for the first such
problem to fail the whole request. Limits of the whole request (its pixel total, a full
queue) always fail it, since sending it again would meet them again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from ...audit import note
from ...budget import RequestPixels
from ...errors import Problem
from ...schemas import EmbedBatchResponse, EmbedItem, EmbedResponse, ProblemDetails
from .. import uploads
from ..deps import Rt
from ..uploads import check_room, decode, read_upload

__all__ = ["router"]

router = APIRouter(tags=["embedding"])

#: Problems of one image, not of the request: these fail only that image of a batch.
IMAGE_PROBLEM_STATUSES = frozenset({413, 415, 422})
REQUEST_PROBLEM_CODES = frozenset({"request-too-large"})


def _image_problem(exc: Problem) -> bool:
    return exc.status in IMAGE_PROBLEM_STATUSES and exc.code not in REQUEST_PROBLEM_CODES


@router.post(
    "/embed",
    response_model=EmbedResponse | EmbedBatchResponse,
    summary="Embed crops; each query_id can be searched with GET /search",
)
async def embed(
    rt: Rt,
    request: Request,
    image: Annotated[
        list[UploadFile],
        File(description="JPEG, PNG or WebP crops: one part, or several for a batch"),
    ],
    batch: Annotated[
        bool, Query(description="answer a list (EmbedBatchResponse) even for one image")
    ] = False,
    all_or_nothing: Annotated[
        bool,
        Query(description="a batch fails as a whole at its first bad image, instead of per image"),
    ] = False,
) -> EmbedResponse | EmbedBatchResponse:
    limit = rt.settings.max_images_per_request
    if len(image) > limit:
        raise Problem(
            413,
            f"{len(image)} images in one request; the limit is {limit} "
            "(SONA_MAX_IMAGES_PER_REQUEST)",
            code="too-many-images",
        )
    note(request, images=len(image))
    check_room(rt, len(image))  # overloaded? say so before decoding anything
    as_list = batch or len(image) > 1
    pixels = RequestPixels(rt.settings.max_request_pixels)
    crops, errors = {}, {}
    for index, upload in enumerate(image):  # one at a time: the pixel budgets hold
        label = f"image {index} ({upload.filename or 'unnamed'})" if as_list else "image"
        try:
            data = await read_upload(rt, upload, label)
            crops[index] = (await decode(rt, data, label, pixels))[1]
        except Problem as exc:
            if not as_list or all_or_nothing or not _image_problem(exc):
                raise
            errors[index] = ProblemDetails(
                type=f"urn:sona-reid:problem:{exc.code}",
                title=exc.title,
                status=exc.status,
                detail=exc.detail,
            )
    vectors = await uploads.embed(rt, list(crops.values()), request) if crops else []
    by_index = dict(zip(crops, vectors, strict=True))
    ttl = rt.settings.query_ttl_s
    if not as_list:
        vector = by_index[0]
        return EmbedResponse(
            query_id=rt.queries.put(vector),
            embedding=vector.tolist(),
            dim=len(vector),
            model=rt.model_id,
            expires_in_s=ttl,
        )
    items = []
    for index, upload in enumerate(image):
        vector = by_index.get(index)
        items.append(
            EmbedItem(index=index, filename=upload.filename, error=errors[index])
            if vector is None
            else EmbedItem(
                index=index,
                filename=upload.filename,
                query_id=rt.queries.put(vector),
                embedding=vector.tolist(),
            )
        )
    return EmbedBatchResponse(
        results=items,
        count=len(crops),
        failed=len(errors),
        dim=rt.embedder.dim,
        model=rt.model_id,
        expires_in_s=ttl,
    )
