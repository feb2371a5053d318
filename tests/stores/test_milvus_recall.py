"""Recall against exact on a real Milvus server with its default approximate index (HNSW):
search by vector, by item (the item left out) and by track (the track's crops left out), on
clustered data where the true neighbours are close together, as re-ID embeddings are."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from service.store import GalleryStore, SearchFilter
from service.store.milvus import search as milvus_search

from .support import T0, Backend, needs_milvus_server, new_item

pytestmark = needs_milvus_server

N, DIM, K = 4000, 128, 10
#: HNSW (M 32, the store's ef) finds about all true neighbours at this size; the bar leaves room for
#: the graph's randomness without letting a broken search path (0.5) through.
MIN_RECALL = 0.9


@pytest.fixture(scope="module")
def clustered(milvus_server: str, tmp_path_factory: pytest.TempPathFactory):
    backend = Backend("milvus-server", tmp_path_factory.mktemp("recall"), milvus_server)
    store = backend.open(dim=DIM, index="HNSW")
    rng = np.random.default_rng(17)
    centers = rng.standard_normal((N // 8, DIM)).astype(np.float32)
    x = np.repeat(centers, 8, axis=0) + 0.4 * rng.standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(N)  # clusters spread over time and segments, as footage is
    tracks = [f"t{i // 4}" for i in range(N)]  # four crops per track, within a cluster
    items = [
        new_item(x[i], f"cam{i % 20}", T0 + timedelta(seconds=int(n)), track=tracks[i])
        for n, i in enumerate(order)
    ]
    ids: dict[int, str] = {}
    for start in range(0, N, 500):
        part = order[start : start + 500]
        for i, a in zip(part, store.add("g", items[start : start + 500]), strict=True):
            ids[int(i)] = a.item_id
    yield store, x, ids, tracks, order
    store.close()
    backend.cleanup()


def _recall(hits, want: set[str]) -> float:
    return len({h.item.item_id for h in hits} & want) / len(want)


def _exact(x: np.ndarray, q: np.ndarray, keep: np.ndarray, ids: dict[int, str]) -> set[str]:
    s = x @ q
    s[~keep] = -np.inf
    return {ids[int(i)] for i in np.argsort(-s)[:K]}


def test_search_by_vector_item_and_track_find_the_exact_neighbours(clustered) -> None:
    store, x, ids, tracks, _ = clustered
    store: GalleryStore
    rng = np.random.default_rng(3)
    by_vector, by_item, by_track = [], [], []
    everything = np.ones(N, dtype=bool)
    for i in rng.choice(N, 40, replace=False).tolist():
        q = x[i] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        by_vector.append(_recall(store.search("g", q, K), _exact(x, q, everything, ids)))

        item, v = store.get_with_embedding(ids[i])
        keep = everything.copy()
        keep[i] = False
        hits = store.search("g", v, K, where=SearchFilter(exclude_item=item.item_id))
        by_item.append(_recall(hits, _exact(x, v, keep, ids)))

        t = tracks[i]
        tv = store.track_vector("g", t)
        keep = np.array([tr != t for tr in tracks])
        hits = store.search("g", tv, K, where=SearchFilter(exclude_track=t))
        by_track.append(_recall(hits, _exact(x, tv, keep, ids)))
    assert np.mean(by_vector) >= MIN_RECALL, by_vector
    assert np.mean(by_item) >= MIN_RECALL, by_item
    assert np.mean(by_track) >= MIN_RECALL, by_track


@pytest.mark.parametrize("path", ["scored here", "index with the filter"])
@pytest.mark.parametrize(
    "name",
    ["one camera", "half the cameras", "one hour", "one camera, two hours"],
)
def test_filtered_searches_find_the_exact_neighbours_of_the_items_that_pass(
    clustered, name: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera or time filter passing at most EXACT_FILTERED_MAX items is scored exactly (the
    exact top k); a wider one goes to Milvus with the search, ``ef`` raised by the inverse of
    the share that passes, and finds the exact top k of the items that pass within the stated
    recall (the second path forced here by lowering the bound)."""
    if path == "index with the filter":
        monkeypatch.setattr(milvus_search, "EXACT_FILTERED_MAX", 0)
    store, x, ids, _, order = clustered
    row_of = {item_id: i for i, item_id in ids.items()}
    cams = np.arange(N) % 20
    seconds = np.empty(N)
    seconds[order] = np.arange(N)  # a day of footage in N seconds: an hour is N / 24
    wheres = {
        "one camera": (SearchFilter(cameras=frozenset({"cam3"})), cams == 3),
        "half the cameras": (
            SearchFilter(cameras=frozenset(f"cam{c}" for c in range(10))),
            cams < 10,
        ),
        "one hour": (
            SearchFilter(since=T0 + timedelta(seconds=1000), until=T0 + timedelta(seconds=1166)),
            (seconds >= 1000) & (seconds <= 1166),
        ),
        "one camera, two hours": (
            SearchFilter(
                cameras=frozenset({"cam7"}),
                since=T0 + timedelta(seconds=2000),
                until=T0 + timedelta(seconds=2333),
            ),
            (cams == 7) & (seconds >= 2000) & (seconds <= 2333),
        ),
    }
    where, keep = wheres[name]
    rng = np.random.default_rng(4)
    got = []
    for i in rng.choice(N, 20, replace=False).tolist():
        q = x[i] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        want = _exact(x, q, keep, ids)
        hits = store.search("g", q, K, where=where)
        assert len(hits) == min(K, int(keep.sum()))
        assert all(keep[row_of[h.item.item_id]] for h in hits)  # only items that pass
        found = {h.item.item_id for h in hits}
        if path == "scored here":
            assert found == want
        got.append(len(found & want) / len(want))
    assert np.mean(got) >= MIN_RECALL, got
