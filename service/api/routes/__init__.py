"""One router per resource. API keys are checked before this, by ``service.auth``."""

from __future__ import annotations

from fastapi import APIRouter

from ..problems import PROBLEMS
from . import embed, erasure, gallery, ops, search, tracks

__all__ = ["health_router", "router"]

router = APIRouter(responses=PROBLEMS)
for module in (embed, tracks, erasure, gallery, search):  # tracks before /gallery/{item_id}
    router.include_router(module.router)
router.include_router(ops.router)
health_router = ops.health_router
