"""The API's description: ``/docs`` from a packaged Swagger UI, the Bearer scheme, operation ids.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, a blank page on a site network without
one. The ``fastapi-swagger`` wheel ships Swagger UI's dist files (Swagger UI is Apache-2.0,
the package MIT); they are served from ``/docs/assets/`` here, so the page needs nothing from
elsewhere. The document declares the Bearer scheme so that Swagger UI's "Authorize" works.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS", "install_docs", "operation_id"]

#: Where the Swagger UI files are served.
DOCS_ASSETS = "/docs/assets"
BEARER = "bearer"
#: Operations that stay open whatever the keys: they declare no security requirement.
OPEN_OPERATIONS = frozenset({"healthz", "readyz"})


def operation_id(route: APIRoute) -> str:
    """The route's function name (``embed``, ``search_by_image``): readable in generated
    clients, unlike FastAPI's default ``post_embed_embed_post``."""
    return route.name


def _swagger_files() -> str:
    return str(resources.files("fastapi_swagger") / "resources")


def install_docs(app: FastAPI, *, keys_required: bool) -> None:
    """``/docs`` (and its OAuth2 redirect) from local files, and an ``openapi()`` that declares
    the Bearer scheme; every operation but the health checks requires it when keys are set."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_swagger_files()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}/favicon.ico",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[BEARER] = {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key (sona keys add, or SONA_API_KEYS): only when keys are "
                "configured",
            }
            if keys_required:
                schema["security"] = [{BEARER: []}]
                for operations in schema.get("paths", {}).values():
                    for operation in operations.values():
                        if operation.get("operationId") in OPEN_OPERATIONS:
                            operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
