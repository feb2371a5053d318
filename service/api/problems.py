"""How the OpenAPI document describes error answers."""

from __future__ import annotations

from ..schemas import ProblemDetails

__all__ = ["PROBLEMS"]

PROBLEMS = {
    status: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for status in (400, 401, 404, 413, 415, 422, 429, 503, 507)
}
