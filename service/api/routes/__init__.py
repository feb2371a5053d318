"""One router per resource; every route but the health checks needs the API key when set."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import require_key
from ..problems import PROBLEMS
from . import embed, gallery, ops, search

__all__ = ["health_router", "router"]

router = APIRouter(dependencies=[Depends(require_key)], responses=PROBLEMS)
for module in (embed, gallery, search):
    router.include_router(module.router)
router.include_router(ops.router)
health_router = ops.health_router
