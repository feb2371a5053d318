"""What an integrator relies on, against a real ``sona serve`` with API keys: the API docs served
from local files, the Bearer scheme and readable operation ids in the OpenAPI document, batches
of crops in one ``POST /embed``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import SonaClient, SonaError
from tests.service_support import Server, jpeg, make_checkpoint

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
        SONA_MAX_REQUEST_PIXELS="20000",  # three 128x64 crops are over it, four 64x32 are not
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


# -- POST /embed with several images --------------------------------------------------------


def small(seed: int) -> bytes:
    return jpeg(seed, size=(64, 32))


def parts(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"crop{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]


def test_embed_batch_answers_one_vector_per_image_in_order(authed: httpx.Client) -> None:
    images = [small(i) for i in range(4)]
    single = []
    for data in images:
        response = authed.post("/embed", files=parts(data))
        assert response.status_code == 200, response.text
        single.append(response.json()["embedding"])
    response = authed.post("/embed", files=parts(*images))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 4 and body["failed"] == 0 and body["dim"] == 1536
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert [r["filename"] for r in body["results"]] == [f"crop{i}.jpg" for i in range(4)]
    for result, expected in zip(body["results"], single, strict=True):
        np.testing.assert_allclose(result["embedding"], expected, rtol=0, atol=1e-5)
        assert result["error"] is None
    # each query id searches like a single embed's would
    query_ids = {r["query_id"] for r in body["results"]}
    assert len(query_ids) == 4


def test_a_bad_image_fails_alone_unless_all_or_nothing(authed: httpx.Client) -> None:
    files = parts(small(10), b"not an image at all", small(11))
    body = authed.post("/embed", files=files).json()
    assert body["count"] == 2 and body["failed"] == 1
    good, bad, other = body["results"]
    assert good["embedding"] and other["embedding"] and bad["embedding"] is None
    assert bad["error"]["status"] in (415, 422) and "image 1 (crop1.jpg)" in bad["error"]["detail"]
    assert bad["query_id"] is None
    strict = authed.post("/embed", params={"all_or_nothing": "true"}, files=files)
    assert strict.status_code == bad["error"]["status"]
    assert strict.headers["content-type"].startswith("application/problem+json")
    assert "image 1" in strict.json()["detail"]


def test_embed_batch_keeps_the_request_limits(authed: httpx.Client) -> None:
    too_many = authed.post("/embed", files=parts(*[small(i) for i in range(5)]))
    assert too_many.status_code == 413 and "limit is 4" in too_many.json()["detail"]
    # three 128x64 crops declare 24,576 pixels, over SONA_MAX_REQUEST_PIXELS: the whole request
    over = authed.post("/embed", files=parts(*[jpeg(i) for i in range(3)]))
    assert over.status_code == 413, over.text
    assert over.json()["type"].endswith("request-too-large")
    # an image over the per-image byte limit is that image's problem only
    big = jpeg(3, size=(2000, 1000))
    assert len(big) > 100_000
    body = authed.post("/embed", files=parts(small(1), big)).json()
    assert body["count"] == 1 and body["results"][1]["error"]["status"] == 413


def test_batch_true_answers_a_list_for_one_image(authed: httpx.Client) -> None:
    body = authed.post("/embed", params={"batch": "true"}, files=parts(small(5))).json()
    assert body["count"] == 1 and len(body["results"]) == 1
    one = authed.post("/embed", files=parts(small(5))).json()
    assert set(one) >= {"query_id", "embedding", "dim", "model"}


# -- SonaClient ---------------------------------------------------------------------------


@pytest.fixture
def sona(server: Server):
    with SonaClient(server.url, api_key=KEY, retries=2) as client:
        yield client


def test_client_ingests_searches_gets_and_deletes(sona: SonaClient, tmp_path: Path) -> None:
    crops = [small(40 + i) for i in range(4)]
    path = tmp_path / "a.jpg"
    path.write_bytes(crops[0])
    items = sona.add(
        [path, ("b.jpg", crops[1]), crops[2], crops[3]],
        gallery="client",
        metadata=[
            {"camera_id": "c1", "timestamp": datetime(2024, 5, 1, 8, tzinfo=UTC), "identity": "a"},
            {"camera_id": "c2", "timestamp": "2024-05-01T09:00:00+02:00"},
            {"camera_id": "c3", "timestamp": "2024-05-01T10:00:00Z", "track_id": "t1"},
            {"camera_id": "c3", "timestamp": "2024-05-01T11:00:00Z"},
        ],
    )
    assert [i.camera_id for i in items] == ["c1", "c2", "c3", "c3"]
    assert items[0].identity == "a" and items[2].track_id == "t1"
    assert items[1].timestamp == datetime(2024, 5, 1, 7, tzinfo=UTC)
    assert sona.counts()["client"] == {"c1": 1, "c2": 1, "c3": 2}
    assert sona.get(items[0].item_id) == items[0]
    assert sona.image(items[0].item_id) == crops[0]

    by_image = sona.search_by_image(path, gallery="client", k=4)
    assert by_image.matches[0].item_id == items[0].item_id
    assert by_image.matches[0].score == pytest.approx(1.0, abs=1e-3)
    assert [m.rank for m in by_image.matches] == [1, 2, 3, 4]
    by_item = sona.search_by_item(items[0].item_id, k=10)
    assert items[0].item_id not in {m.item_id for m in by_item.matches}
    assert len(by_item.matches) == 3 and by_item.gallery == "client"
    query = sona.embed(crops[3])
    assert len(query.vector) == 1536
    filtered = sona.search_by_query(query.query_id, gallery="client", cameras=["c3"], k=5)
    assert {m.camera_id for m in filtered.matches} == {"c3"}
    assert filtered.matches[0].item_id == items[3].item_id
    late = sona.search_by_query(query.query_id, gallery="client", since="2024-05-01T10:30:00Z")
    assert [m.item_id for m in late.matches] == [items[3].item_id]

    batch = sona.embed_many([crops[0], b"junk"])
    assert batch[0].vector is not None and batch[1].error["status"] in (415, 422)

    sona.delete(items[0].item_id)
    with pytest.raises(SonaError) as gone:
        sona.get(items[0].item_id)
    assert gone.value.status == 404 and gone.value.problem["status"] == 404
    assert sona.counts()["client"] == {"c2": 1, "c3": 2}


def test_client_errors_carry_the_problem(server: Server) -> None:
    with (
        SonaClient(server.url, api_key="wrong", retries=0) as client,
        pytest.raises(SonaError) as refused,
    ):
        client.counts()
    assert refused.value.status == 401 and "API key" in refused.value.detail


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_have_process_figures_and_route_labels(
    anonymous: httpx.Client, authed: httpx.Client
) -> None:
    for path in ("/", "/docs", "/docs/assets/swagger-ui.css", "/static/app.js", "/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    assert authed.get("/no/such/page").status_code == 404
    text = authed.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["process_resident_memory_bytes"] > 50e6  # torch alone is more
    assert values["process_open_fds"] > 3
    assert values["process_cpu_seconds_total"] > 0
    seen = {
        (re.search(r'route="([^"]*)"', name).group(1), re.search(r'status="(\d+)"', name).group(1))
        for name in values
        if name.startswith("sona_http_request_duration_seconds_count")
    }
    for route in ("/", "/docs", "/docs/assets/{path}", "/static/{path}", "/openapi.json"):
        assert (route, "200") in seen, (route, seen)
    assert ("unmatched", "404") in seen
    assert not any(route == "unmatched" and status == "200" for route, status in seen), seen
