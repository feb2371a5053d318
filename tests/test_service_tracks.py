"""Tracks over HTTP, on a real ``sona serve``: ``GET /gallery/tracks/{track_id}`` and
``GET /search?track_id=...`` (the mean of the track's crops, normalised), with real JPEGs."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.service_support import Server, jpeg, make_checkpoint

PROBLEM = "application/problem+json"
GALLERY = "footage1"
# track "cam1-0001": three crops sent newest first, in two time zones
TRACK_TIMES = [
    "2024-05-01T08:00:04+02:00",
    "2024-05-01T06:00:00+00:00",
    "2024-05-01T08:00:02+02:00",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tracks")
    checkpoint = make_checkpoint(root / "tiny.pt", seed=3)
    srv = Server(checkpoint, root / "data", SONA_MAX_WAIT_MS="20").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def indexed(server: Server) -> dict:
    """Track cam1-0001 (3 crops), track cam2-0002 (2 crops), and 6 crops of no track."""
    images = [jpeg(seed=s) for s in range(11)]
    tracks = ["cam1-0001"] * 3 + ["cam2-0002"] * 2 + [None] * 6
    cameras = ["cam1"] * 3 + ["cam2"] * 2 + ["cam3"] * 6
    times = [*TRACK_TIMES, "2024-05-01T06:01:00Z", "2024-05-01T06:01:01Z"] + [
        f"2024-05-01T07:00:0{i}Z" for i in range(6)
    ]
    meta = [
        {"camera_id": c, "timestamp": t} | ({"track_id": k} if k else {})
        for c, t, k in zip(cameras, times, tracks, strict=True)
    ]
    with server.client() as c:
        files = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(images)]
        response = c.post(
            "/gallery",
            params={"gallery": GALLERY},
            files=files,
            data={"metadata": json.dumps(meta)},
        )
        assert response.status_code == 201, response.text
        ids = [i["item_id"] for i in response.json()["items"]]
        vectors = np.array(
            [
                c.post("/embed", files={"image": ("q.jpg", d, "image/jpeg")}).json()["embedding"]
                for d in images
            ],
            dtype=np.float64,
        )
    return {"ids": ids, "vectors": vectors, "tracks": tracks}


@pytest.fixture
def client(server: Server):
    with server.client() as c:
        yield c


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def test_track_lists_its_crops_camera_and_time_span(client: httpx.Client, indexed: dict) -> None:
    body = client.get("/gallery/tracks/cam1-0001", params={"gallery": GALLERY}).json()
    ids = indexed["ids"]
    assert [i["item_id"] for i in body["items"]] == [ids[1], ids[2], ids[0]]  # oldest first
    assert body["count"] == 3 and body["camera_id"] == "cam1" and body["cameras"] == ["cam1"]
    assert body["first_seen"] == "2024-05-01T06:00:00Z"
    assert body["last_seen"] == "2024-05-01T08:00:04+02:00"  # the offset it was sent with
    assert all(i["track_id"] == "cam1-0001" for i in body["items"])
    image = client.get(f"/gallery/{body['items'][0]['item_id']}/image")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


def test_unknown_tracks_are_404(client: httpx.Client, indexed: dict) -> None:
    for path, params in (
        ("/gallery/tracks/cam9-0001", {"gallery": GALLERY}),
        ("/gallery/tracks/cam1-0001", {"gallery": "other"}),  # a track lives in its gallery
        ("/search", {"gallery": GALLERY, "track_id": "cam9-0001"}),
    ):
        assert problem(client.get(path, params=params), 404)["type"].endswith(":track-not-found")
    problem(client.get("/gallery/tracks/x", params={"gallery": "../x"}), 422)


def test_search_by_track_is_the_mean_of_its_crops(client: httpx.Client, indexed: dict) -> None:
    vectors, ids, tracks = indexed["vectors"], indexed["ids"], indexed["tracks"]
    mean = vectors[:3].mean(axis=0)
    query = mean / np.linalg.norm(mean)
    body = client.get(
        "/search", params={"gallery": GALLERY, "track_id": "cam1-0001", "k": 20}
    ).json()
    got = [r["item_id"] for r in body["results"]]
    assert len(got) == 8 and not set(got) & set(ids[:3])  # everything but the track itself
    where = {item_id: n for n, item_id in enumerate(ids)}
    scores = [r["score"] for r in body["results"]]
    np.testing.assert_allclose(scores, [vectors[where[i]] @ query for i in got], atol=1e-4)
    assert scores == sorted(scores, reverse=True)
    assert [r["track_id"] for r in body["results"]] == [tracks[where[i]] for i in got]


def test_group_by_track_gives_one_result_per_footage_track(
    client: httpx.Client, indexed: dict
) -> None:
    query = client.post("/embed", files={"image": ("q.jpg", jpeg(seed=3), "image/jpeg")}).json()[
        "query_id"
    ]
    body = client.get(
        "/search", params={"gallery": GALLERY, "query_id": query, "k": 20, "group_by": "track"}
    ).json()
    labels = [r["track_id"] for r in body["results"]]
    assert labels.count("cam1-0001") == 1 and labels.count("cam2-0002") == 1
    assert labels.count(None) == 6 and len(labels) == 8
    assert body["results"][0]["track_id"] == "cam2-0002"  # the crop itself, score ~1
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_takes_exactly_one_query(client: httpx.Client, indexed: dict) -> None:
    params = {"gallery": GALLERY, "track_id": "cam1-0001", "item_id": indexed["ids"][5]}
    assert "exactly one" in problem(client.get("/search", params=params), 422)["detail"]
    problem(client.get("/search", params={"track_id": "t" * 129}), 422)


def test_openapi_documents_the_track_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/gallery/tracks/{track_id}" in paths
    names = [p["name"] for p in paths["/search"]["get"]["parameters"]]
    assert "track_id" in names
