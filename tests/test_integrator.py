"""What an integrator relies on, against a real ``sona serve`` with API keys: the API docs served
from local files, the Bearer scheme and readable operation ids in the OpenAPI document."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.service_support import Server, make_checkpoint

KEY = "integrator-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("integrator")
    checkpoint = make_checkpoint(root / "tiny.pt")
    srv = Server(
        checkpoint,
        root / "data",
        SONA_API_KEYS=KEY,
        SONA_MAX_IMAGES_PER_REQUEST="4",
        SONA_MAX_UPLOAD_BYTES="100000",
        SONA_MAX_WAIT_MS="20",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def anonymous(server: Server):
    with server.client() as c:
        yield c


@pytest.fixture
def authed(server: Server):
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_docs_load_swagger_ui_from_the_service_itself(anonymous: httpx.Client) -> None:
    page = anonymous.get("/docs")
    assert page.status_code == 200, page.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert any(a.endswith("swagger-ui.css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the service"
        response = anonymous.get(asset)  # public, like the page: no key needed
        assert response.status_code == 200, (asset, response.status_code)
        assert len(response.content) > 500, asset
    bundle = anonymous.get(next(a for a in assets if a.endswith("swagger-ui-bundle.js")))
    assert "SwaggerUIBundle" in bundle.text
    assert anonymous.get("/docs/oauth2-redirect").status_code == 200


def test_openapi_declares_bearer_and_readable_operation_ids(anonymous: httpx.Client) -> None:
    spec = anonymous.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    name = next(iter(schemes))
    assert spec["security"] == [{name: []}]
    ids = {
        (path, method): op["operationId"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert ids[("/embed", "post")] == "embed"
    assert ids[("/search", "post")] == "search_by_image"
    assert ids[("/search", "get")] == "search"
    assert ids[("/gallery", "post")] == "add_items"
    assert ids[("/gallery/{item_id}", "delete")] == "delete_item"
    assert len(set(ids.values())) == len(ids), "operation ids must be unique"
    for op_id in ids.values():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op_id) and len(op_id) <= 24, op_id
    # the health checks stay open, and say so
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/readyz"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/embed"]["post"]  # inherits the document's


def test_the_key_swagger_ui_sends_is_the_one_the_service_takes(
    anonymous: httpx.Client, authed: httpx.Client
) -> None:
    """Swagger UI's "Authorize" with an http/bearer scheme sends ``Authorization: Bearer``."""
    assert anonymous.get("/gallery").status_code == 401
    assert authed.get("/gallery").status_code == 200


def test_favicon_is_served(anonymous: httpx.Client) -> None:
    response = anonymous.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
