"""RFC 9457 problem details: every error leaves the service as ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .request_id import current_request_id, instance_of
from .store import (
    CropMissingError,
    StoreError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
    UnknownGalleryError,
)

__all__ = ["PROBLEM_TYPE", "Problem", "install_error_handlers", "problem_response"]

log = logging.getLogger("sona.service")
PROBLEM_TYPE = "application/problem+json"


def _slug(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-")


class Problem(Exception):
    """An error to answer with: status, a short title, and a detail saying what to change."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.code = code or _slug(status)
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"urn:sona-reid:problem:{code or _slug(status)}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        errors.append({"field": location, "message": error.get("msg", "invalid")})
    text = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return text, errors


#: How store errors leave the service: status, problem code, detail, headers. Starlette picks
#: the handler of the most specific class, so StoreError is the fallback of the others.
_STORE_ERRORS: dict[type[Exception], tuple[int, str, Any, dict[str, str] | None]] = {
    StoreUnavailableError: (
        503,
        "store-unavailable",
        lambda e: "the gallery store is unavailable; retry shortly",
        {"Retry-After": "5"},
    ),
    StoreFullError: (
        507,
        "insufficient-storage",
        lambda e: f"the gallery's disk is full; nothing was stored ({e})",
        None,
    ),
    CropMissingError: (
        404,
        "crop-missing",
        lambda e: f"{e}: the item is there, its image is not (the server's log says where)",
        None,
    ),
    StoreRefusedError: (
        502,
        "store-refused",
        lambda e: f"the gallery store refused the request, and would again: {e}",
        None,
    ),
    UnknownGalleryError: (404, "gallery-not-found", str, None),
    StoreError: (422, "invalid-item", str, None),
}


def _store_handler(
    status: int, code: str, detail: Any, headers: dict[str, str] | None
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if status >= 500 or code == "crop-missing":  # the operator's to look at
            log.error("gallery store: %s", exc)
        return problem_response(
            status, detail(exc), code=code, headers=headers, instance=instance_of(request.scope)
        )

    return handle


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            code=exc.code,
            headers=exc.headers,
            instance=instance_of(request.scope),
            **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem_response(
            exc.status_code,
            detail,
            headers=getattr(exc, "headers", None),
            instance=instance_of(request.scope),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        text, errors = _validation_detail(exc)
        return problem_response(
            422, text, code="invalid-parameters", instance=instance_of(request.scope), errors=errors
        )

    for kind, spec in _STORE_ERRORS.items():
        app.add_exception_handler(kind, _store_handler(*spec))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled error on %s %s (request_id %s)",
            request.method,
            request.url.path,
            current_request_id(),
        )
        return problem_response(
            500,
            "an internal error occurred; it has been logged",
            instance=instance_of(request.scope),
        )
