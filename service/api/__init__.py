"""The HTTP layer: dependencies (``deps``) and one router per resource (``routes``)."""

from __future__ import annotations

from .routes import health_router, router

__all__ = ["health_router", "router"]
