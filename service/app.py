"""The FastAPI application: ``create_app(settings)``, with its middleware and its lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from model.loading import LoadedModel

from .access import check_routes
from .api import health_router, router
from .audit import AuditLog, AuditMiddleware
from .auth import AuthMiddleware
from .docs import install_docs, operation_id
from .errors import install_error_handlers
from .head import HeadMiddleware
from .keys import KeyTable
from .limits import BodyLimitMiddleware
from .metrics import Metrics, RequestMetricsMiddleware
from .request_id import RequestIdMiddleware
from .retention import RetentionPolicy, RetentionSweeper
from .runtime import Runtime
from .settings import Settings
from .startup import Preparation
from .store import GalleryStore

__all__ = ["create_app"]

log = logging.getLogger("sona.service")
STATIC = Path(__file__).parent / "static"  # the search page; its API calls carry the key

DESCRIPTION = """
Person re-identification gallery search with SONA-Net. Crops go into named galleries with
camera, time and optional identity and track labels; a query crop returns the gallery items of
the same person, best first, with cosine similarity. Errors are RFC 9457 problem details.
When API keys are configured every route needs `Authorization: Bearer <key>`, except the
health checks and (unless `SONA_PUBLIC_PAGES=false`) the search page and these docs.
"""


def create_app(
    settings: Settings | None = None,
    model: LoadedModel | None = None,
    store: GalleryStore | None = None,
    prepare: Preparation | None = None,
) -> FastAPI:
    """The service for ``settings``. ``model`` and ``store``: opened already (``sona serve``
    opens both before listening, so a bad checkpoint or a data directory another process holds
    is one line, and the checkpoint is read once); otherwise they open in the lifespan.
    ``prepare``: work that takes a while and gives ``(settings, model, store)`` (the demo): the
    port opens at once and ``/readyz`` reports its progress until the service is ready."""
    settings = settings or Settings()
    metrics = Metrics()
    keys = KeyTable(settings.keys_path, settings.keys, on_error=log.error)
    audit = AuditLog(settings.audit_path, settings.audit_max_bytes, settings.audit_keep)

    async def start(
        app: FastAPI,
        ready_settings: Settings,
        model: LoadedModel | None,
        store: GalleryStore | None,
    ) -> None:
        rt = await run_in_threadpool(Runtime.load, ready_settings, metrics, model, store)
        await run_in_threadpool(rt.embedder.warm_up)
        await rt.embedder.start()
        app.state.runtime = rt
        rt.ready = True
        policy = RetentionPolicy(ready_settings.retention_days, ready_settings.retention_by_gallery)
        if policy:  # one sweep now, then every SONA_RETENTION_SWEEP_S
            sweeper = RetentionSweeper(
                rt.store,
                policy,
                interval_s=ready_settings.retention_sweep_s,
                batch=ready_settings.retention_batch,
                audit=audit,
                metrics=metrics,
            )
            app.state.retention = (sweeper, asyncio.create_task(sweeper.run()))
        demo = " (DEMO model trained on synthetic data)" if rt.model_meta.get("demo") else ""
        log.info("ready: %s, %s%s", rt.model_id, rt.embedder.encoder.name, demo)
        if rt.encoder_choice:
            log.info(
                "encoder: %s, chosen by %s: %s; CPU %s",
                rt.encoder_choice["runtime"],
                rt.encoder_choice["chosen_by"],
                rt.encoder_choice["reason"],
                rt.encoder_choice["cpu"],
            )

    async def prepare_then_start(app: FastAPI) -> None:
        assert prepare is not None
        try:
            ready_settings, model, store = await prepare.wait()
            prepare.progress.set("loading the model and the gallery")
            await start(app, ready_settings, model, store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the process cannot serve: say why, and stop
            log.error("could not prepare the service: %s", exc)
            app.state.startup_error = f"could not prepare the service: {exc}"
            if app.state.request_stop is not None:  # sona serve's: a clean stop
                app.state.request_stop()
            else:
                os.kill(os.getpid(), signal.SIGTERM)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if prepare is None:
            await start(app, settings, model, store)
        else:
            task = asyncio.create_task(prepare_then_start(app))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if app.state.retention is not None:  # let a sweep's batch end before the store closes
                sweeper, sweeping = app.state.retention
                sweeper.stopping.set()
                sweeping.cancel()
                await run_in_threadpool(sweeper.wait_idle)
            rt: Runtime | None = app.state.runtime
            if rt is not None:
                rt.ready = False
                await rt.embedder.stop()
                await run_in_threadpool(rt.store.close)
            audit.close()

    app = FastAPI(
        title="SONA-Net re-ID gallery search",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from packaged files, not a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.audit = audit
    app.state.retention = None
    app.state.runtime = None
    app.state.preparation = prepare
    app.state.startup_error = None  # set when ``prepare`` failed: sona serve exits with it
    app.state.request_stop = None  # how to stop the server that runs this app, if it says
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    check_routes(app.routes)  # every API route has a role: none is left open by mistake
    install_docs(app, keys_required=keys.required)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    per_image = settings.max_upload_bytes
    slack = 256 * 1024  # multipart headers and form fields

    def limit_for(method: str, path: str) -> int:
        if path.rstrip("/") in ("/gallery", "/embed"):
            return per_image * settings.max_images_per_request + slack
        return per_image + slack

    # the last added runs first: the request id (and access log line), metrics, the audit
    # trail (which records the key check's refusals), then the key, its role and galleries
    # (before any body is read), then the body's size and pace, then HEAD as GET
    app.add_middleware(HeadMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for, timeout=settings.body_timeout_s)
    app.add_middleware(AuthMiddleware, keys=keys, public_pages=settings.public_pages)
    app.add_middleware(AuditMiddleware, audit=audit)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
