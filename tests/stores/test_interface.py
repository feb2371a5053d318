"""Gallery stores: one functional suite run against both backends, real kill -9.

The functional tests (round trip, search against brute force with filters, group_by, deletion,
validation, restart, hostile strings, concurrency) take a ``backend`` parameter: ``faiss`` (the
embedded FAISS + SQLite store, real SQLite and FAISS in tmp_path) and ``milvus-lite`` (the
Milvus store). Milvus runs as Milvus Lite (embedded); a Milvus cluster was not run. Milvus Lite
3.x is a pure-Python re-implementation of the Milvus API (its own WAL, segments, FAISS indexes
and Milvus's expression language), not the C++ Milvus server: these tests check how the store
uses the Milvus API and the behaviour the service relies on, not Milvus standalone or a cluster
(consistency across nodes, their WAL, their HNSW). The milvus-lite parameters are skipped where
pymilvus or milvus-lite is not installed. With ``SONA_TEST_MILVUS_URI`` set (a real Milvus, for
example the compose ``milvus`` profile's on http://localhost:19530), the functional tests also
run as ``milvus-server``; that was not run here. FAISS internals (kill -9 rounds, disk full in
SQLite, HNSW/IVF kinds, snapshots) stay FAISS-only.

Searches are checked against a numpy brute force over the same random unit vectors.
"""

from __future__ import annotations

import errno
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from service.store import (
    GalleryStore,
    SearchFilter,
    StoreError,
    StoreFullError,
    UnknownGalleryError,
)
from service.store.crops import LocalCropStore, crop_key, day_crop_key

from .support import (
    BACKENDS,
    FILTERS,
    OFFSETS,
    RARE,
    T0,
    Backend,
    Gallery,
    assert_ranking,
    grouped_reference,
    new_item,
    reference,
    unit,
)

# ------------------------------------------------------------------------------------ basics


def test_round_trip_default_dim(backend: Backend) -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 3, 1536)
    given = [
        new_item(
            x[0],
            "lobby",
            datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=OFFSETS[1]),
            identity="alice",
            track="t-1",
            image=b"\x89PNG..",
            image_type="image/png",
        ),
        new_item(
            x[1],
            "gate 2",
            datetime(2024, 3, 1, 1, 2, 3, tzinfo=OFFSETS[2]),
            image=b"RIFF..WEBP",
            image_type="image/webp",
        ),
        new_item(x[2], "lobby", datetime(2024, 3, 2, tzinfo=UTC), track="t-2"),
    ]
    with backend.open(dim=1536) as store:
        assert store.dim == 1536
        before = datetime.now(UTC)
        added = store.add("site-A_1", given)
        assert len({a.item_id for a in added}) == 3
        for a, g, v in zip(added, given, x, strict=True):
            item = store.get(a.item_id)
            assert item == a
            assert item.gallery == "site-A_1"
            assert (item.camera_id, item.identity, item.track_id, item.image_type) == (
                g.camera_id,
                g.identity,
                g.track_id,
                g.image_type,
            )
            assert item.timestamp.isoformat() == g.timestamp.isoformat()  # offset kept
            assert item.timestamp.utcoffset() == g.timestamp.utcoffset()
            assert item.created_at.utcoffset() == timedelta(0)
            assert before - timedelta(seconds=1) <= item.created_at <= datetime.now(UTC)
            assert store.get_image(a.item_id) == (g.image, g.image_type)
            emb = store.get_embedding(a.item_id)
            assert emb.dtype == np.float32
            np.testing.assert_array_equal(emb, v)
        assert store.counts() == {"site-A_1": {"lobby": 2, "gate 2": 1}}
        assert store.count() == 3
        assert store.count("site-A_1") == 3
        assert store.count("other") == 0
        files = backend.crop_files()
        a0 = added[0].item_id
        day = added[0].timestamp.astimezone(UTC).date()  # Milvus keeps crops by UTC day
        key = day_crop_key("site-A_1", day, a0, "image/png") if backend.milvus else None
        assert f"crops/{key or crop_key('site-A_1', a0, 'image/png')}" in files
        assert len(files) == 3
        hits = store.search("site-A_1", x[1], 1)
        assert hits[0].item == added[1]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert store.get("nope") is None
        assert store.get_embedding("nope") is None
        assert store.get_image("nope") is None
        assert store.delete("nope") is False
        with pytest.raises(UnknownGalleryError, match="unknown"):
            store.search("unknown", x[0], 5)
        assert store.add("site-A_1", []) == []


def test_delete_removes_everywhere(store: GalleryStore, backend: Backend) -> None:
    x = unit(np.random.default_rng(1), 30)
    added = store.add("g", [new_item(v, f"c{i % 3}") for i, v in enumerate(x)])
    gone = [added[i].item_id for i in (0, 7, 8, 29)]
    paths = {p for p in backend.crop_files() if any(i in p for i in gone)}
    assert len(paths) == 4
    for item_id in gone:
        assert store.delete(item_id) is True
        assert store.delete(item_id) is False
        assert store.get(item_id) is None
        assert store.get_image(item_id) is None
        assert store.get_embedding(item_id) is None
    assert store.count("g") == 26
    assert sum(store.counts()["g"].values()) == 26
    assert not paths & backend.crop_files()
    for v in x:
        hits = store.search("g", v, 100)
        assert len(hits) == 26
        assert not {h.item.item_id for h in hits} & set(gone)
    assert store.search("g", x[7], 1)[0].item.item_id not in gone
    backend.assert_consistent(store)


def test_ties_broken_by_rowid(store: GalleryStore) -> None:
    """Equal scores come in insertion order (FAISS: rowid; Milvus: acknowledgement order)."""
    rng = np.random.default_rng(2)
    v = unit(rng, 1)[0]
    other = unit(rng, 40)
    items = [new_item(o) for o in other[:20]] + [new_item(v) for _ in range(6)]
    items += [new_item(o) for o in other[20:]]
    added = store.add("g", items)
    dupes = [a.item_id for a in added[20:26]]
    for k in (1, 2, 5, 6):
        assert [h.item.item_id for h in store.search("g", v, k)] == dupes[:k]
    store.delete(dupes[0])
    assert [h.item.item_id for h in store.search("g", v, 3)] == dupes[1:4]
    grouped = store.search("g", v, 3, group_by="identity")  # unlabelled: each its own group
    assert [h.item.item_id for h in grouped] == dupes[1:4]


# ------------------------------------------------------------------------------------ search


@pytest.mark.parametrize("name", list(FILTERS))
def test_search_equals_brute_force(gallery: Gallery, name: str) -> None:
    f = FILTERS[name](gallery)
    mask = gallery.mask(f)
    for qi, q in enumerate(gallery.queries[:4]):
        for k in (1, 10, 57):
            ref, s = reference(gallery.x, q, k, mask)
            hits = gallery.store.search("main", q, k, where=f)
            assert_ranking(hits, gallery.ids, ref, s)
            assert len(hits) == min(k, int(mask.sum())), (name, qi, k)
            for h in hits:
                p = gallery.ids.index(h.item.item_id)
                assert h.item.camera_id == gallery.cameras[p]
                assert h.item.timestamp == gallery.times[p]


def test_very_selective_filter_returns_exactly_those(gallery: Gallery) -> None:
    rare = [100, 900, 1700]
    for q in gallery.queries:
        hits = gallery.store.search("main", q, 10, where=SearchFilter(cameras=frozenset({RARE})))
        s = gallery.x[rare] @ q
        assert [h.item.item_id for h in hits] == [gallery.ids[rare[i]] for i in np.argsort(-s)]
        f = FILTERS["three_minutes"](gallery)
        hits = gallery.store.search("main", q, 10, where=f)
        assert sorted(h.item.item_id for h in hits) == sorted(gallery.ids[1000:1003])


def test_k_larger_than_gallery(gallery: Gallery) -> None:
    q = gallery.queries[0]
    ref, s = reference(gallery.x, q, 10_000)
    hits = gallery.store.search("main", q, 10_000)
    assert len(hits) == 2000
    assert_ranking(hits, gallery.ids, ref, s)
    f = FILTERS["cameras"](gallery)
    ref, s = reference(gallery.x, q, 10_000, gallery.mask(f))
    assert_ranking(gallery.store.search("main", q, 5000, where=f), gallery.ids, ref, s)


@pytest.mark.parametrize("group_by", ["identity", "track"])
@pytest.mark.parametrize("name", ["none", "combined", "exclude_item", "rare_camera"])
def test_group_by_equals_best_per_group(gallery: Gallery, group_by: str, name: str) -> None:
    labels = gallery.identity if group_by == "identity" else gallery.track
    f = FILTERS[name](gallery)
    mask = gallery.mask(f)
    for q in gallery.queries[:3]:
        s = gallery.x.astype(np.float64) @ q
        for k in (1, 7, 60, 5000):
            ref = grouped_reference(s, labels, k, mask)
            hits = gallery.store.search("main", q, k, where=f, group_by=group_by)
            assert_ranking(hits, gallery.ids, ref, s)
            keys = [h.item.identity if group_by == "identity" else h.item.track_id for h in hits]
            named = [key for key in keys if key is not None]
            assert len(named) == len(set(named))


def test_group_by_covers_all_groups(gallery: Gallery) -> None:
    """Asking for more groups than exist returns one item per group, all of them."""
    hits = gallery.store.search("main", gallery.queries[0], 10_000, group_by="identity")
    n_groups = len({i for i in gallery.identity if i is not None})
    n_unlabelled = sum(i is None for i in gallery.identity)
    assert len(hits) == n_groups + n_unlabelled


# ------------------------------------------------------------------------------------ restart


@pytest.mark.parametrize("name", BACKENDS)
def test_restart_keeps_everything(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Close and reopen: items, crops, embeddings, counts and rankings are all still there.

    Milvus gets a database of its own here, so closing the last store stops the embedded
    Milvus Lite server and reopening starts a new one that recovers from its files.
    """
    backend = Backend(name, tmp_path, tmp_path / "own.db")
    request.addfinalizer(backend.cleanup)
    rng = np.random.default_rng(14)
    x, queries = unit(rng, 120), unit(rng, 4)
    with backend.open() as s:
        added = s.add(
            "a", [new_item(v, f"c{i % 4}", identity=f"p{i % 9}") for i, v in enumerate(x)]
        )
        s.add("b", [new_item(v, "c9") for v in x[:10]])
        s.delete(added[3].item_id)
        f = SearchFilter(cameras=frozenset({"c1", "c9"}), since=T0)
        before = [
            [(h.item, h.score) for h in s.search(g, q, 12, where=f, group_by=gb)]
            for g in "ab"
            for q in queries
            for gb in (None, "identity")
        ]
        counts = s.counts()
        images = {a.item_id: s.get_image(a.item_id) for a in added[:5]}
    if name == "milvus":
        from milvus_lite.server_manager import server_manager_instance

        assert str((tmp_path / "own.db").resolve()) not in server_manager_instance._servers
    with backend.open() as s:
        after = [
            [(h.item, h.score) for h in s.search(g, q, 12, where=f, group_by=gb)]
            for g in "ab"
            for q in queries
            for gb in (None, "identity")
        ]
        assert after == before
        assert s.counts() == counts
        assert {i: s.get_image(i) for i in images} == images
        assert s.get(added[3].item_id) is None
        np.testing.assert_array_equal(s.get_embedding(added[7].item_id), x[7])
        backend.assert_consistent(s)


# ------------------------------------------------------------------------------------ threads


def test_concurrent_adds_deletes_and_searches(backend: Backend) -> None:
    rng = np.random.default_rng(12)
    base = unit(rng, 200)
    cams = ["a", "b", "c", "d"]
    with backend.open() as s:
        s.add("g", [new_item(v, cams[i % 4]) for i, v in enumerate(base)])
        stop = threading.Event()
        errors: list[BaseException] = []
        added: list[str] = []
        removed: list[str] = []
        searches = [0]
        lock = threading.Lock()

        def writer(seed: int) -> None:
            r = np.random.default_rng(seed)
            mine: list[str] = []
            try:
                while not stop.is_set():
                    x = unit(r, int(r.integers(1, 6)))
                    got = s.add("g", [new_item(v, cams[int(r.integers(4))]) for v in x])
                    mine += [a.item_id for a in got]
                    if len(mine) > 5 and r.random() < 0.4:
                        victim = mine.pop(int(r.integers(len(mine))))
                        assert s.delete(victim)
                        with lock:
                            removed.append(victim)
                    with lock:
                        added.extend(a.item_id for a in got)
            except BaseException as e:
                errors.append(e)

        def searcher(seed: int) -> None:
            r = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    q = unit(r, 1)[0]
                    cam = cams[int(r.integers(4))]
                    f = SearchFilter(exclude_cameras=frozenset({cam}))
                    group_by = [None, "identity"][int(r.integers(2))]
                    hits = s.search("g", q, 10, where=f, group_by=group_by)
                    assert len(hits) == 10  # never short: SQLite and index agree mid-write
                    assert all(h.item.camera_id != cam for h in hits)
                    scores = [h.score for h in hits]
                    assert scores == sorted(scores, reverse=True)
                    assert len(s.search("g", q, 10)) == 10
                    s.counts()
                    with lock:
                        searches[0] += 1
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
        threads += [threading.Thread(target=searcher, args=(100 + i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30  # at least 2 s, and enough searches on a slow server
        time.sleep(2.0)
        while time.monotonic() < deadline and (searches[0] <= 10 or len(added) <= 10):
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert searches[0] > 10 and len(added) > 10
        assert s.count("g") == 200 + len(added) - len(removed)
        backend.assert_consistent(s)
        for item_id in removed:
            assert s.get(item_id) is None
        for item_id in added[::7]:
            if item_id not in removed:
                v = s.get_embedding(item_id)
                assert s.search("g", v, 1)[0].item.item_id == item_id


def test_restore_keeps_ids_and_times_and_skips_what_is_there(store: GalleryStore) -> None:
    """An import: ids and acknowledgement times kept, a second run adds nothing, an id held by
    another gallery is refused, bad ids never reach the backend."""
    x = unit(np.random.default_rng(21), 6)
    ids = [f"imported-{i}" for i in range(6)]
    created = [T0 + timedelta(hours=i) for i in range(6)]
    items = [new_item(v, f"cam{i % 2}", identity=f"p{i}") for i, v in enumerate(x)]
    added = store.restore("g", items[:4], ids[:4], created[:4])
    assert [a.item_id for a in added] == ids[:4]
    again = store.restore("g", items, ids, created)  # an interrupted import, run again
    assert [a.item_id for a in again] == ids[4:]
    assert store.count("g") == 6
    got = store.get(ids[2])
    assert got is not None and got.created_at == created[2] and got.identity == "p2"
    np.testing.assert_allclose(store.get_embedding(ids[2]), x[2], atol=1e-6)
    assert store.search("g", x[5], 1)[0].item.item_id == ids[5]
    with pytest.raises(StoreError, match="another gallery"):
        store.restore("other", items[:1], ids[:1], created[:1])
    for bad in ("../x", "", "a" * 65):
        with pytest.raises(StoreError, match="bad item id"):
            store.restore("g", items[:1], [bad], created[:1])
    with pytest.raises(StoreError, match="repeated"):
        store.restore("g", items[:2], ["same", "same"], created[:2])
    assert store.count() == 6


def test_iter_items_lists_a_gallery_in_acknowledgement_order(store: GalleryStore) -> None:
    x = unit(np.random.default_rng(22), 7)
    first = store.add("g", [new_item(v) for v in x[:4]])
    store.add("other", [new_item(x[4])])
    second = store.add("g", [new_item(v) for v in x[5:]])
    store.delete(first[1].item_id)
    expected = [a.item_id for a in first + second if a.item_id != first[1].item_id]
    batches = list(store.iter_items("g", batch=2))
    assert all(len(b) <= 2 for b in batches)
    listed = [(item, emb) for b in batches for item, emb in b]
    assert [item.item_id for item, _ in listed] == expected
    vectors = {a.item_id: v for a, v in zip(first + second, [*x[:4], *x[5:]], strict=True)}
    for item, emb in listed:
        assert item.gallery == "g"
        np.testing.assert_allclose(emb, vectors[item.item_id], atol=1e-6)
    assert list(store.iter_items("nothing-here")) == []
    with pytest.raises(StoreError):
        store.iter_items("../g")


def test_track_lists_its_items_in_time_order_within_its_gallery(store: GalleryStore) -> None:
    """A footage track's crops, oldest first whatever order they came in, with their vectors;
    the same track id in another gallery, other tracks and deleted items stay out."""
    x = unit(np.random.default_rng(23), 8)
    offset = OFFSETS[1]
    times = [T0 + timedelta(seconds=s) for s in (30, 10, 20, 0)]
    added = store.add(
        "g",
        [
            new_item(v, ts=t.astimezone(offset), track="cam1-t7")
            for v, t in zip(x[:4], times, strict=True)
        ],
    )
    store.add("g", [new_item(x[4], track="cam1-t8"), new_item(x[5])])
    store.add("other", [new_item(x[6], track="cam1-t7")])
    store.delete(added[2].item_id)
    listed = store.track("g", "cam1-t7")
    assert [item.item_id for item, _ in listed] == [added[i].item_id for i in (3, 1, 0)]
    assert [item.timestamp for item, _ in listed] == [times[i] for i in (3, 1, 0)]
    assert all(item.timestamp.utcoffset() == offset.utcoffset(None) for item, _ in listed)
    for (item, emb), i in zip(listed, (3, 1, 0), strict=True):
        assert item.track_id == "cam1-t7"
        np.testing.assert_allclose(emb, x[i], atol=1e-6)
    assert len(store.track("g", "cam1-t7", limit=2)) == 2
    assert store.track("g", "nope") == []
    assert store.track("nothing-here", "cam1-t7") == []
    for bad in (("../g", "t"), ("g", ""), ("g", None)):
        with pytest.raises(StoreError):
            store.track(*bad)
    with pytest.raises(StoreError):
        store.track("g", "cam1-t7", limit=0)


def test_disk_full_writing_crops_keeps_nothing_of_the_batch(backend: Backend, monkeypatch) -> None:
    """ENOSPC part way through a batch's crops (a partial file left, as a real one leaves):
    StoreFullError, no crop or row of the batch kept, and the store writes again once there
    is room. Both backends write crops through the same crop store."""
    x = unit(np.random.default_rng(8), 20)
    with backend.open() as store:
        store.add("g", [new_item(v) for v in x[:5]])
        files, counts = backend.crop_files(), store.counts()
        real = LocalCropStore._write
        calls = {"n": 0}
        lock = threading.Lock()

        def flaky(self: LocalCropStore, key: str, data: bytes) -> Path:
            with lock:
                calls["n"] += 1
                n = calls["n"]
            if n < 4:
                return real(self, key, data)
            with open(self._path(key), "xb") as fh:
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(LocalCropStore, "_write", flaky)
        with pytest.raises(StoreFullError):
            store.add("g", [new_item(v) for v in x[5:15]])
        with pytest.raises(StoreFullError):
            store.add("g", [new_item(x[15])])  # the single-item path
        assert backend.crop_files() == files
        assert store.counts() == counts
        monkeypatch.setattr(LocalCropStore, "_write", real)
        store.add("g", [new_item(v) for v in x[5:15]])
        assert store.count("g") == 15
        backend.assert_consistent(store)
