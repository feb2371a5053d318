"""``POST /embed``: one crop's embedding, and a query id to search with later."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from ...schemas import EmbedResponse
from ..deps import Rt
from ..uploads import embed_upload

__all__ = ["router"]

router = APIRouter(tags=["embedding"])


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Embed one crop; the returned query_id can be searched with GET /search",
)
async def embed(
    rt: Rt,
    request: Request,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP crop")],
) -> EmbedResponse:
    vector = await embed_upload(rt, request, image)
    query_id = rt.queries.put(vector)
    return EmbedResponse(
        query_id=query_id,
        embedding=vector.tolist(),
        dim=len(vector),
        model=rt.model_id,
        expires_in_s=rt.settings.query_ttl_s,
    )
