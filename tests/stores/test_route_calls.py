"""One store call per need: what ``GET /search`` asks of the store, counted.

The service runs in this process (an ASGI test client, not uvicorn) so that a spy can count
the calls its routes make on a real FAISS + SQLite store; the model is a tiny random SONA-Net.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_support import make_checkpoint

from service.app import create_app
from service.runtime import load_model
from service.settings import Settings
from service.store import FaissSqliteStore, GalleryStore, NewItem

from .support import T0, unit

PUBLIC = [
    "add", "restore", "get", "get_with_embedding", "get_embedding", "get_image", "delete",
    "search", "track", "track_vector", "count", "counts", "gallery_counts", "iter_items",
    "list_tracks", "galleries",
]  # fmt: skip


def spy(store: GalleryStore, calls: Counter) -> None:
    """Count the route's calls of the store's public methods (not the store's own calls)."""
    depth = [0]
    for name in PUBLIC:
        method = getattr(store, name)

        def counted(*args, _name=name, _method=method, **kwargs):
            if not depth[0]:
                calls[_name] += 1
            depth[0] += 1
            try:
                return _method(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(store, name, counted)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Counter, dict]]:
    root = tmp_path_factory.mktemp("calls")
    settings = Settings(checkpoint=make_checkpoint(root / "tiny.pt"), data_dir=root / "data")
    model = load_model(settings)
    store = FaissSqliteStore(root / "data", dim=model.encoder.dim)
    x = unit(np.random.default_rng(0), 12, model.encoder.dim)
    added = store.add(
        "g",
        [
            NewItem(x[i], f"c{i % 2}", T0 + timedelta(minutes=i), b"\xff\xd8crop", "image/jpeg",
                    track_id=f"t{i % 3}")
            for i in range(12)
        ],
    )  # fmt: skip
    calls: Counter = Counter()
    spy(store, calls)
    with TestClient(create_app(settings, model=model, store=store)) as client:
        yield client, calls, {"ids": [a.item_id for a in added]}


def ask(service, path: str, **params) -> tuple[int, dict, Counter]:
    client, calls, _ = service
    calls.clear()
    r = client.get(path, params=params)
    return r.status_code, r.json(), Counter(calls)


def test_search_by_item_is_two_store_calls(service) -> None:
    item = service[2]["ids"][0]
    status, body, calls = ask(service, "/search", item_id=item, k=3)
    assert status == 200 and len(body["results"]) == 3
    assert calls == Counter({"get_with_embedding": 1, "search": 1})


def test_an_empty_answer_adds_one_count_of_that_gallery(service) -> None:
    item = service[2]["ids"][0]
    late = (T0 + timedelta(days=1)).isoformat()
    status, body, calls = ask(service, "/search", item_id=item, since=late)
    assert status == 200 and body["results"] == []
    assert body["empty_reason"]["gallery_items"] == 12
    assert calls == Counter({"get_with_embedding": 1, "search": 1, "gallery_counts": 1})


def test_search_by_track_is_two_store_calls(service) -> None:
    status, body, calls = ask(service, "/search", track_id="t1", gallery="g", k=2)
    assert status == 200 and all(r["track_id"] != "t1" for r in body["results"])
    assert calls == Counter({"track_vector": 1, "search": 1})


def test_an_unknown_gallery_is_the_stores_404(service) -> None:
    item = service[2]["ids"][0]
    status, body, calls = ask(service, "/search", item_id=item, gallery="nowhere")
    assert (status, body["type"]) == (404, "urn:sona-reid:problem:gallery-not-found")
    assert "nowhere" in body["detail"]
    assert calls == Counter({"get_with_embedding": 1, "search": 1})


def test_no_item_is_called_tracks(service) -> None:
    """``/gallery/tracks/...`` is the track route; ``tracks`` is never an item's id."""

    status, body, _ = ask(service, "/gallery/tracks/t1", gallery="g")
    assert status == 200 and body["count"] == 4
    status, body, calls = ask(service, "/gallery/tracks")
    assert status in (404, 200) and not calls.get("get")  # never read as an item
    status, body, calls = ask(service, "/gallery/tracks/image")
    assert (status, body["type"]) == (404, "urn:sona-reid:problem:track-not-found")
