"""What routes depend on: the running service, and the API key check."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Query, Request

from ..errors import Problem
from ..runtime import Runtime
from ..store import GALLERY_NAME

__all__ = ["GALLERY_PATTERN", "GalleryName", "Rt", "require_key", "runtime"]

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


def require_key(request: Request) -> None:
    """``Authorization: Bearer KEY`` against every configured key, in constant time."""
    keys = request.app.state.settings.keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    # Digests have one length, so compare_digest never returns early on a length mismatch;
    # no early exit either: the time does not depend on which key (if any) matched.
    digest = hashlib.sha256(presented).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    if not matched:
        raise Problem(
            401,
            "a valid API key is required: send 'Authorization: Bearer <key>'",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="sona"'},
        )


Rt = Annotated[Runtime, Depends(runtime)]
