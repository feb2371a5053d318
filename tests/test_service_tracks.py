"""Tracks over HTTP, on a real ``sona serve``: ``GET /gallery/tracks/{track_id}`` and
``GET /search?track_id=...`` (the mean of the track's crops, normalised), with real JPEGs."""

from __future__ import annotations

import json
from datetime import datetime

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
    for n in range(3):  # track cam1-0001's crops say where in the video they were cut
        meta[n] |= {"source": "gate.mp4", "frame": 400 + n, "box": [10 * n, 20, 48, 120]}
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
    assert [(i["source"], i["frame"], i["box"]) for i in body["items"]] == [
        ("gate.mp4", 401, [10, 20, 48, 120]),
        ("gate.mp4", 402, [20, 20, 48, 120]),
        ("gate.mp4", 400, [0, 20, 48, 120]),
    ]
    item = client.get(f"/gallery/{indexed['ids'][0]}").json()
    assert (item["source"], item["frame"], item["box"]) == ("gate.mp4", 400, [0, 20, 48, 120])
    other = client.get(f"/gallery/{indexed['ids'][5]}").json()
    assert other["source"] is other["frame"] is other["box"] is None  # none given, none made up
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
    query = client.post("/embed", files={"image": ("q.jpg", jpeg(seed=1), "image/jpeg")})
    found = client.get(
        "/search", params={"gallery": GALLERY, "query_id": query.json()["query_id"], "k": 1}
    ).json()["results"][0]
    assert found["item_id"] == ids[1] and (found["source"], found["frame"]) == ("gate.mp4", 401)


def test_tracks_are_listed_newest_first_a_page_at_a_time(
    client: httpx.Client, indexed: dict
) -> None:
    def page(**params) -> dict:
        response = client.get("/gallery/tracks", params={"gallery": GALLERY, **params})
        assert response.status_code == 200, response.text
        return response.json()

    body = page()  # cam2-0002 was last seen at 06:01:01Z, cam1-0001 at 06:00:04Z
    assert [t["track_id"] for t in body["tracks"]] == ["cam2-0002", "cam1-0001"]
    assert body["next_cursor"] is None
    last = body["tracks"][1]
    assert (last["camera_id"], last["count"]) == ("cam1", 3)
    assert datetime.fromisoformat(last["first_seen"]) == datetime.fromisoformat(
        "2024-05-01T06:00:00+00:00"
    )
    one = page(limit=1)
    assert [t["track_id"] for t in one["tracks"]] == ["cam2-0002"] and one["next_cursor"]
    rest = page(limit=1, cursor=one["next_cursor"])
    assert [t["track_id"] for t in rest["tracks"]] == ["cam1-0001"] and not rest["next_cursor"]
    assert [t["track_id"] for t in page(camera_id="cam2")["tracks"]] == ["cam2-0002"]
    assert [t["track_id"] for t in page(until="2024-05-01T06:00:30Z")["tracks"]] == ["cam1-0001"]
    assert [t["track_id"] for t in page(since="2024-05-01T06:00:30Z")["tracks"]] == ["cam2-0002"]
    assert page(camera_id="cam3")["tracks"] == []  # crops of no track make no track


def test_bad_listing_parameters_and_provenance_are_refused(
    client: httpx.Client, indexed: dict
) -> None:
    params = {"gallery": GALLERY}
    assert problem(client.get("/gallery/tracks", params=params | {"cursor": "!!"}), 400)[
        "type"
    ].endswith(":invalid-cursor")
    problem(client.get("/gallery/tracks", params=params | {"since": "yesterday"}), 422)
    problem(client.get("/gallery/tracks", params=params | {"limit": 0}), 422)
    problem(
        client.get(
            "/gallery/tracks",
            params=params | {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
        ),
        422,
    )
    before = client.get("/gallery").json()["total"]
    for bad in (
        {"frame": -1},
        {"frame": 1.5},
        {"box": [1, 2, 3]},
        {"box": [0, 0, 0, 10]},
        {"box": [-1, 0, 5, 10]},
        {"source": "rtsp://admin:secret@10.0.0.9/stream"},
        {"source": "a\x00b"},
    ):
        meta = [{"camera_id": "c", "timestamp": "2024-05-01T06:00:00Z"} | bad]
        response = client.post(
            "/gallery",
            params=params,
            files=[("images", ("a.jpg", jpeg(seed=20), "image/jpeg"))],
            data={"metadata": json.dumps(meta)},
        )
        assert problem(response, 422)["type"].endswith(":invalid-metadata"), bad
    assert client.get("/gallery").json()["total"] == before  # nothing stored


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
    assert "/gallery/tracks/{track_id}" in paths and "/gallery/tracks" in paths
    names = [p["name"] for p in paths["/search"]["get"]["parameters"]]
    assert "track_id" in names
