"""Operations: Prometheus metrics (behind the key) and the health checks (always open)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...errors import Problem
from ...runtime import Runtime
from ...schemas import ProblemDetails
from ..deps import Caller, Rt

__all__ = ["health_router", "router"]

router = APIRouter(tags=["operations"])
health_router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(rt: Rt, who: Caller) -> Response:
    if who.galleries is not None:  # its gauges name every gallery
        raise Problem(
            403,
            f"/metrics needs an admin key for every gallery; key {who.name!r} is limited to some",
            code="forbidden",
            required_role="admin",
        )
    rt.metrics.set_gallery_sizes(await run_in_threadpool(rt.store.counts))
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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
        preparation = getattr(request.app.state, "preparation", None)
        if preparation is not None:  # the demo being built: what, and how far along
            raise Problem(
                503,
                f"not ready: {preparation.progress.describe()}",
                headers={"Retry-After": "2"},
                code="starting",
                progress=preparation.progress.snapshot(),
            )
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
            "encoder_choice": rt.encoder_choice,
            "demo": bool(rt.model_meta.get("demo", False)),
            "store": rt.settings.store,
            "index": rt.settings.index,
        }
    )
