"""Prometheus metrics, on a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "RequestMetricsMiddleware", "route_label"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open fds (on Linux)
        self.requests = Histogram(
            "sona_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sona_embed_batch_size",
            "Images per forward pass of the micro-batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_depth = Gauge(
            "sona_embed_queue_depth", "Images waiting to be embedded", registry=r
        )
        self.embed_seconds = Histogram(
            "sona_embed_batch_seconds",
            "Time of one embedding forward pass (whole batch)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "sona_search_seconds",
            "Time of one gallery search",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "sona_embed_rejected_total", "Images refused because the queue was full", registry=r
        )
        self.dropped = Counter(
            "sona_embed_dropped_total",
            "Queued images dropped because their client left",
            registry=r,
        )
        self.gallery_items = Gauge(
            "sona_gallery_items", "Items per gallery", ["gallery"], registry=r
        )

    def set_gallery_sizes(self, counts: dict[str, dict[str, int]]) -> None:
        """Refresh the per-gallery gauge from the store's counts (done at scrape time)."""
        self.gallery_items.clear()
        for gallery, cameras in counts.items():
            self.gallery_items.labels(gallery).set(sum(cameras.values()))


def route_label(scope: Scope, path: str, root_path: str) -> str:
    """The route template that took the request: ``/gallery/{item_id}``, ``/static/{path}``
    for a mounted folder, ``/openapi.json``; ``unmatched`` for no route (a 404)."""
    route = scope.get("route")
    if getattr(route, "path", None):
        return route.path
    probe = {"type": "http", "path": path, "root_path": root_path, "method": scope["method"]}
    router = getattr(scope.get("app"), "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(probe)
        if match is Match.FULL:
            suffix = "/{path}" if isinstance(candidate, Mount) else ""
            return f"{candidate.path}{suffix}"
    return "unmatched"


class RequestMetricsMiddleware:
    """Latency per route template (``/gallery/{item_id}``, not every id), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        path, root_path = scope["path"], scope.get("root_path", "")  # a mount rewrites them

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(
                scope["method"], route_label(scope, path, root_path), str(status)
            ).observe(time.perf_counter() - start)
