"""What routes depend on: the running service, the caller's key, the gallery-name parameter."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from ..auth import OPEN_SERVICE, principal_of
from ..errors import Problem
from ..keys import Principal
from ..runtime import Runtime
from ..store import GALLERY_NAME

__all__ = ["GALLERY_PATTERN", "Caller", "GalleryName", "Rt", "caller", "runtime"]

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


def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise Problem(503, "the service is starting", headers={"Retry-After": "5"})
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


def caller(request: Request) -> Principal:
    """Whom the request acts for (set by the key check before the body was read)."""
    return principal_of(request.scope) or OPEN_SERVICE


Caller = Annotated[Principal, Depends(caller)]
