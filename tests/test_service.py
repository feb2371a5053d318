"""The service over HTTP: a real ``sona serve`` (uvicorn) on 127.0.0.1, real images, real store."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from model import embed, load_checkpoint
from model.preprocess import load_image, normalize, resize
from tests.service_support import Server, jpeg, make_checkpoint

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("service")
    srv = Server(
        checkpoint,
        root / "data",
        SONA_MAX_WAIT_MS="30",
        SONA_QUERY_TTL_S="600",
        SONA_MAX_UPLOAD_BYTES="200000",
        SONA_MAX_IMAGES_PER_REQUEST="40",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server):
    with server.client() as c:
        yield c


def add(client: httpx.Client, images: list[bytes], gallery: str = "default", **fields):
    files = [("images", (f"crop{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    return client.post("/gallery", params={"gallery": gallery}, files=files, data=fields)


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    assert "Traceback" not in response.text
    return body


def total(client: httpx.Client) -> int:
    return client.get("/gallery").json()["total"]


# -- operations ---------------------------------------------------------------------------


def test_health_ready_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"].startswith("sona-net-r18-sona2-64x32@")
    assert ready["device"] == "cpu" and ready["demo"] is False
    text = client.get("/metrics").text
    for name in (
        "sona_http_request_duration_seconds",
        "sona_embed_batch_size",
        "sona_embed_queue_depth",
        "sona_gallery_items",
        "sona_search_seconds",
    ):
        assert name in text
    assert 'route="/readyz"' in text


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/embed",
        "/gallery",
        "/gallery/{item_id}",
        "/gallery/{item_id}/image",
        "/search",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    params = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert {
        "query_id",
        "item_id",
        "k",
        "gallery",
        "cameras",
        "exclude_camera",
        "since",
        "until",
        "group_by",
    } <= params
    assert "422" in spec["paths"]["/search"]["get"]["responses"]


# -- embedding ----------------------------------------------------------------------------


def test_embed_equals_model_embed_on_the_same_file(
    client: httpx.Client, checkpoint: Path, tmp_path: Path
) -> None:
    data = jpeg(7, size=(150, 70))
    path = tmp_path / "crop.jpg"
    path.write_bytes(data)
    body = client.post("/embed", files={"image": ("crop.jpg", data, "image/jpeg")}).json()
    assert body["dim"] == 1536 and len(body["embedding"]) == 1536
    net, _ = load_checkpoint(checkpoint)
    expected = embed(net, normalize(resize(load_image(path), net.config.input_size)[None]))[0]
    np.testing.assert_allclose(body["embedding"], expected.numpy(), rtol=0, atol=2e-6)
    assert abs(np.linalg.norm(body["embedding"]) - 1) < 1e-5


def test_concurrent_embeds_are_batched_and_equal_sequential(client: httpx.Client) -> None:
    images = [jpeg(100 + i) for i in range(24)]

    def one(data: bytes) -> list[float]:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            response = c.post("/embed", files={"image": ("x.jpg", data, "image/jpeg")})
            assert response.status_code == 200, response.text
            return response.json()["embedding"]

    before = _batch_histogram(client)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        parallel = list(pool.map(one, images))
    after = _batch_histogram(client)
    sequential = [one(data) for data in images]
    np.testing.assert_allclose(parallel, sequential, rtol=0, atol=2e-6)
    batches = after["count"] - before["count"]
    assert batches < 24, "concurrent requests must share forward passes"
    assert after["sum"] - before["sum"] == 24


def _batch_histogram(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    found = {}
    for key in ("count", "sum"):
        match = re.search(rf"^sona_embed_batch_size_{key} (\S+)$", text, re.M)
        found[key] = float(match.group(1))
    return found


# -- gallery ------------------------------------------------------------------------------


def test_ingest_get_image_delete(client: httpx.Client) -> None:
    images = [jpeg(200), jpeg(201, fmt="PNG")]
    response = add(
        client,
        images,
        gallery="lobby",
        camera_id="cam-1",
        timestamp="2024-05-01T12:00:00+02:00",
        identity="alice",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == 2
    first, second = body["items"]
    assert first["camera_id"] == "cam-1" and first["identity"] == "alice"
    assert first["timestamp"] == "2024-05-01T12:00:00+02:00"
    assert second["image_type"] == "image/png"

    item = client.get(f"/gallery/{first['item_id']}").json()
    assert item == first
    crop = client.get(f"/gallery/{second['item_id']}/image")
    assert crop.content == images[1] and crop.headers["content-type"] == "image/png"
    counts = client.get("/gallery").json()
    lobby = next(g for g in counts["galleries"] if g["gallery"] == "lobby")
    assert lobby["count"] == 2 and lobby["cameras"] == [{"camera_id": "cam-1", "count": 2}]

    assert client.delete(f"/gallery/{first['item_id']}").status_code == 204
    problem(client.get(f"/gallery/{first['item_id']}"), 404)
    problem(client.delete(f"/gallery/{first['item_id']}"), 404)
    problem(client.get(f"/gallery/{first['item_id']}/image"), 404)


def test_ingest_with_per_image_metadata(client: httpx.Client) -> None:
    metadata = [
        {"camera_id": "c1", "timestamp": "2024-05-01T10:00:00Z", "track_id": "t1"},
        {"camera_id": "c2", "timestamp": "2024-05-01T10:05:00Z", "identity": "bob"},
    ]
    response = add(client, [jpeg(300), jpeg(301)], gallery="meta", metadata=json.dumps(metadata))
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [i["camera_id"] for i in items] == ["c1", "c2"]
    assert items[0]["track_id"] == "t1" and items[1]["identity"] == "bob"
    assert items[0]["timestamp"] == "2024-05-01T10:00:00Z"


# -- search -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_gallery(server: Server) -> dict:
    """40 items over 4 cameras, 10 identities, a day apart each camera, with tracks."""
    metadata = [
        {
            "camera_id": f"cam{i % 4}",
            "timestamp": f"2024-06-0{1 + i % 4}T08:{i:02d}:00Z",
            "identity": f"person{i % 10}",
            "track_id": f"track{i % 7}",
        }
        for i in range(40)
    ]
    images = [jpeg(1000 + i) for i in range(40)]
    with server.client() as c:
        response = add(c, images, gallery="search", metadata=json.dumps(metadata))
        assert response.status_code == 201, response.text
        items = response.json()["items"]
        vectors = np.array(
            [
                c.post("/embed", files={"image": ("x.jpg", d, "image/jpeg")}).json()["embedding"]
                for d in images
            ]
        )
    return {"items": items, "vectors": vectors, "images": images}


def brute_force(gallery: dict, query: np.ndarray, k: int, keep=lambda item: True) -> list[str]:
    scores = gallery["vectors"] @ query
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [gallery["items"][i]["item_id"] for i in order if keep(gallery["items"][i])][:k]


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["results"]]


def test_search_by_query_id_and_by_image(client: httpx.Client, search_gallery: dict) -> None:
    image = jpeg(1003)
    embedded = client.post("/embed", files={"image": ("q.jpg", image, "image/jpeg")}).json()
    query = np.array(embedded["embedding"])
    response = client.get(
        "/search", params={"query_id": embedded["query_id"], "k": 5, "gallery": "search"}
    )
    assert ids(response) == brute_force(search_gallery, query, 5)
    results = response.json()["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["item_id"] == search_gallery["items"][3]["item_id"]
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(results))
    assert response.json()["took_ms"] >= 0
    posted = client.post(
        "/search",
        params={"k": 5, "gallery": "search"},
        files={"image": ("q.jpg", image, "image/jpeg")},
    )
    assert ids(posted) == ids(response)


def test_search_by_item_excludes_the_item(client: httpx.Client, search_gallery: dict) -> None:
    item = search_gallery["items"][5]
    found = ids(client.get("/search", params={"item_id": item["item_id"], "k": 39}))
    assert item["item_id"] not in found and len(found) == 39
    expected = brute_force(
        search_gallery,
        search_gallery["vectors"][5],
        40,
        keep=lambda i: i["item_id"] != item["item_id"],
    )
    assert found == expected


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"cameras": "cam1"}, lambda i: i["camera_id"] == "cam1"),
        ({"cameras": ["cam0", "cam2"]}, lambda i: i["camera_id"] in ("cam0", "cam2")),
        ({"exclude_camera": "cam3"}, lambda i: i["camera_id"] != "cam3"),
        (
            {"since": "2024-06-02T00:00:00Z", "until": "2024-06-03T23:59:59Z"},
            lambda i: i["timestamp"][:10] in ("2024-06-02", "2024-06-03"),
        ),
        (
            {"cameras": "cam2", "since": "2024-06-03T08:10:00+00:00"},
            lambda i: i["camera_id"] == "cam2" and i["timestamp"] >= "2024-06-03T08:10",
        ),
    ],
)
def test_filters_return_exactly_the_top_k_that_pass(
    client: httpx.Client, search_gallery: dict, params: dict, keep
) -> None:
    query = search_gallery["vectors"][11]
    embedded = client.post(
        "/embed", files={"image": ("q.jpg", search_gallery["images"][11], "image/jpeg")}
    ).json()
    response = client.get(
        "/search", params={"query_id": embedded["query_id"], "k": 6, "gallery": "search", **params}
    )
    assert ids(response) == brute_force(search_gallery, query, 6, keep)


@pytest.mark.parametrize(("group_by", "field"), [("identity", "identity"), ("track", "track_id")])
def test_group_by_gives_k_distinct_people(
    client: httpx.Client, search_gallery: dict, group_by: str, field: str
) -> None:
    embedded = client.post(
        "/embed", files={"image": ("q.jpg", search_gallery["images"][0], "image/jpeg")}
    ).json()
    results = client.get(
        "/search",
        params={
            "query_id": embedded["query_id"],
            "k": 5,
            "gallery": "search",
            "group_by": group_by,
        },
    ).json()
    groups = [r[field] for r in results["results"]]
    assert len(groups) == 5 and len(set(groups)) == 5
    scores = search_gallery["vectors"] @ search_gallery["vectors"][0]
    best: dict[str, float] = {}
    for item, score in zip(search_gallery["items"], scores, strict=True):
        best[item[field]] = max(best.get(item[field], -2.0), float(score))
    expected = sorted(best, key=lambda g: -best[g])[:5]
    assert groups == expected


# -- bad input ----------------------------------------------------------------------------


def _truncated() -> bytes:
    data = jpeg(5)
    return data[: len(data) // 2]


def _huge_png_header() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"this is not an image", 415),
        (b"GIF89a" + b"\x00" * 40, 415),
        (_truncated(), 422),
        (_huge_png_header(), 413),
        (jpeg(1, size=(4, 4)), 422),
    ],
    ids=["empty", "text", "gif", "truncated", "30000px-header", "tiny"],
)
def test_bad_images_are_refused_and_change_nothing(
    client: httpx.Client, data: bytes, status: int
) -> None:
    before = total(client)
    body = problem(client.post("/embed", files={"image": ("x.jpg", data, "image/jpeg")}), status)
    assert "image" in body["detail"]
    # a bad image among good ones: the whole request is refused, nothing is stored
    problem(add(client, [jpeg(9), data], camera_id="c", timestamp="2024-01-01T00:00:00Z"), status)
    assert total(client) == before


def test_oversized_upload_is_refused_before_it_is_read(client: httpx.Client) -> None:
    before = total(client)
    big = b"\xff\xd8" + b"\x00" * 400_000  # over the per-image limit: refused once read so far
    problem(client.post("/embed", files={"image": ("x.jpg", big, "image/jpeg")}), 413)
    batch_limit = 200_000 * 40 + 256 * 1024  # an /embed batch's body: 40 images at most

    def chunked():  # no Content-Length: counted as it streams, cut off past the batch limit
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
        for _ in range(batch_limit // 10_000 + 1):
            yield b"\x00" * 10_000

    response = client.post(
        "/embed", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    problem(response, 413)
    too_many = [jpeg(i) for i in range(41)]
    problem(add(client, too_many, camera_id="c", timestamp="2024-01-01T00:00:00Z"), 413)
    assert total(client) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"timestamp": "2024-01-01T00:00:00Z"},  # no camera
        {"camera_id": "c"},  # no timestamp
        {"camera_id": "c", "timestamp": "yesterday"},
        {"camera_id": "c", "timestamp": "2024-01-01T00:00:00"},  # no offset
        {"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z", "metadata": "[{"},
        {"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z", "metadata": "[{}, {}]"},
        {
            "metadata": json.dumps(
                [{"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z", "colour": "red"}]
            )
        },
        {"camera_id": "x" * 200, "timestamp": "2024-01-01T00:00:00Z"},
    ],
)
def test_bad_metadata_is_refused(client: httpx.Client, fields: dict) -> None:
    before = total(client)
    problem(add(client, [jpeg(1)], **fields), 422)
    assert total(client) == before


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"k": 0}, 422),
        ({"k": -3}, 422),
        ({"k": 10**9}, 422),
        ({"k": "ten"}, 422),
        ({"gallery": "../etc"}, 422),
        ({"gallery": "a b"}, 422),
        ({"gallery": "x" * 65}, 422),
        ({"gallery": "nowhere"}, 404),
        ({"since": "not-a-time"}, 422),
        ({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, 422),
        ({"group_by": "colour"}, 422),
    ],
)
def test_bad_search_parameters(
    client: httpx.Client, search_gallery: dict, params: dict, status: int
) -> None:
    query_id = client.post("/embed", files={"image": ("q.jpg", jpeg(1), "image/jpeg")}).json()[
        "query_id"
    ]
    problem(
        client.get("/search", params={"query_id": query_id, "gallery": "search", **params}), status
    )


def test_bad_search_targets(client: httpx.Client, search_gallery: dict) -> None:
    item_id = search_gallery["items"][0]["item_id"]
    problem(client.get("/search"), 422)
    problem(client.get("/search", params={"query_id": "abc", "item_id": item_id}), 422)
    problem(client.get("/search", params={"query_id": "0" * 32}), 404)
    problem(client.get("/search", params={"item_id": "no-such-item"}), 404)
    problem(client.get("/search", params={"item_id": "../../etc/passwd"}), 404)
    problem(client.get("/gallery/..%2F..%2Fetc%2Fpasswd"), 404)
    problem(client.get("/gallery/x'; DROP TABLE items; --"), 404)
    problem(client.get("/nowhere"), 404)
    problem(client.put("/embed"), 405)


def test_sql_metacharacters_are_data(client: httpx.Client) -> None:
    nasty = "c'; DROP TABLE items; --"
    response = add(
        client,
        [jpeg(77)],
        gallery="nasty",
        camera_id=nasty,
        timestamp="2024-01-01T00:00:00Z",
        identity='" OR 1=1 --',
    )
    assert response.status_code == 201, response.text
    item = response.json()["items"][0]
    assert client.get(f"/gallery/{item['item_id']}").json()["camera_id"] == nasty
    found = client.get("/search", params={"item_id": item["item_id"], "cameras": nasty})
    assert found.status_code == 200 and found.json()["results"] == []


# -- the same ranking as `sona eval` ------------------------------------------------------


@pytest.mark.slow
def test_http_ranking_equals_sona_eval(
    server: Server, checkpoint: Path, synthetic_root: Path
) -> None:
    from training.datasets import load_dataset
    from training.evaluation import evaluate
    from training.features import evaluate_net

    data = load_dataset("synthetic", synthetic_root)
    net, _ = load_checkpoint(checkpoint)
    expected = evaluate_net(net, data, torch.device("cpu"))

    gallery_name = "ranking"
    with server.client() as c:
        item_index: dict[str, int] = {}
        records = data.gallery
        for start in range(0, len(records), 32):
            chunk = records[start : start + 32]
            metadata = [
                {
                    "camera_id": str(r.camid),
                    "timestamp": "2024-01-01T00:00:00Z",
                    "identity": str(r.pid),
                }
                for r in chunk
            ]
            response = add(
                c,
                [r.path.read_bytes() for r in chunk],
                gallery=gallery_name,
                metadata=json.dumps(metadata),
            )
            assert response.status_code == 201, response.text
            for offset, item in enumerate(response.json()["items"]):
                item_index[item["item_id"]] = start + offset
        distances = np.zeros((len(data.query), len(records)), dtype=np.float32)
        for row, record in enumerate(data.query):
            results = c.post(
                "/search",
                params={"k": len(records), "gallery": gallery_name},
                files={"image": ("q.jpg", record.path.read_bytes(), "image/jpeg")},
            ).json()["results"]
            assert len(results) == len(records)
            for result in results:
                distances[row, item_index[result["item_id"]]] = 1 - result["score"]
    got = evaluate(
        distances,
        [r.pid for r in data.query],
        [r.pid for r in records],
        [r.camid for r in data.query],
        [r.camid for r in records],
    )
    assert got.rank1 == pytest.approx(expected.rank1, abs=1e-9)
    assert got.mAP == pytest.approx(expected.mAP, abs=1e-4)
