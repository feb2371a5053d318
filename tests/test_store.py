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
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from service.store import (
    FaissSqliteStore,
    GalleryStore,
    Hit,
    NewItem,
    SearchFilter,
    StoreError,
    StoreFullError,
    faiss_sqlite,
)

REPO = Path(__file__).resolve().parents[1]
DIM = 64  # small vectors keep the suite fast; the default 1536 is exercised where it matters
T0 = datetime(2024, 5, 1, tzinfo=UTC)
OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(
    not HAVE_MILVUS, reason="pymilvus / milvus-lite not installed: pip install 'sona-reid[milvus]'"
)
BACKENDS = ["faiss", pytest.param("milvus", id="milvus-lite", marks=needs_milvus)]
#: A real Milvus to run the same suite against (not set in CI: there it is Milvus Lite only),
#: e.g. SONA_TEST_MILVUS_URI=http://localhost:19530 for the compose `milvus` profile's.
MILVUS_SERVER = os.environ.get("SONA_TEST_MILVUS_URI", "")
if MILVUS_SERVER:
    BACKENDS.append(pytest.param("milvus-server", id="milvus-server", marks=needs_milvus))


# ------------------------------------------------------------------------------------ helpers


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def new_item(
    vec: np.ndarray,
    camera: str = "cam1",
    ts: datetime = T0,
    identity: str | None = None,
    track: str | None = None,
    image: bytes | None = None,
    image_type: str = "image/jpeg",
) -> NewItem:
    return NewItem(
        embedding=vec,
        camera_id=camera,
        timestamp=ts,
        image=image if image is not None else b"\xff\xd8crop" + os.urandom(8),
        image_type=image_type,
        identity=identity,
        track_id=track,
    )


def crop_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "crops").rglob("*") if p.is_file()}


def sqlite_rows(root: Path, gallery: str | None = None) -> list[tuple[int, str, str, str]]:
    """(rowid, item_id, gallery, image_path) straight from the database file."""
    conn = sqlite3.connect(f"file:{root / 'gallery.sqlite3'}?mode=ro", uri=True)
    try:
        sql = "SELECT rowid, item_id, gallery, image_path FROM items"
        if gallery is None:
            return conn.execute(sql + " ORDER BY rowid").fetchall()
        return conn.execute(sql + " WHERE gallery = ? ORDER BY rowid", (gallery,)).fetchall()
    finally:
        conn.close()


def assert_consistent(store: FaissSqliteStore, root: Path) -> None:
    """Index == SQLite per gallery, every row has its crop, every crop has its row."""
    rows = sqlite_rows(root)
    galleries = {r[2] for r in rows} | set(store.index_info())
    for g in galleries:
        truth = np.array([r[0] for r in rows if r[2] == g], dtype=np.int64)
        np.testing.assert_array_equal(store.index_ids(g), truth)
        assert store.count(g) == len(truth)
    assert crop_files(root) == {r[3] for r in rows}


class Backend:
    """Opens stores of one kind over one place, and checks what that kind keeps on disk.

    Milvus: a collection prefix of its own in the shared Milvus Lite database (``db``), crops
    under ``root/crops`` (the layout the FAISS store uses, so crop paths compare alike).
    """

    def __init__(self, name: str, root: Path, db: Path | None = None) -> None:
        self.name = name
        self.root = root
        self.db = db
        self.prefix = f"t{uuid.uuid4().hex[:12]}_"

    @property
    def milvus(self) -> bool:
        return self.name.startswith("milvus")

    def open(self, dim: int = DIM, **kw: object) -> GalleryStore:
        if not self.milvus:
            return FaissSqliteStore(self.root, dim=dim, **kw)
        from service.store.milvus import MilvusStore

        uri = str(self.db)
        if self.name == "milvus-server":
            uri = MILVUS_SERVER
            kw.setdefault("index", "FLAT")  # exact, so brute force is the reference
        return MilvusStore(
            uri, dim=dim, collection_prefix=self.prefix, crops=self.root / "crops", **kw
        )

    def cleanup(self) -> None:
        """Drop this test's collection from a real Milvus (Milvus Lite's go with tmp_path)."""
        if self.name == "milvus-server":
            from pymilvus import MilvusClient

            client = MilvusClient(uri=MILVUS_SERVER, token=os.environ.get("SONA_MILVUS_TOKEN", ""))
            client.drop_collection(f"{self.prefix}items")
            client.close()

    def crop_files(self) -> set[str]:
        return crop_files(self.root)

    def assert_consistent(self, store: GalleryStore) -> None:
        """Every row has its crop and every crop its row; counts agree with the rows."""
        if not self.milvus:
            assert_consistent(store, self.root)
            return
        rows = [r for batch in store._scan("", ["item_id", "gallery", "crop_key"]) for r in batch]
        assert len({r["item_id"] for r in rows}) == len(rows)  # no primary key twice
        per_gallery: dict[str, int] = {}
        for r in rows:
            per_gallery[r["gallery"]] = per_gallery.get(r["gallery"], 0) + 1
        for g, n in per_gallery.items():
            assert store.count(g) == n
            assert sum(store.counts()[g].values()) == n
        assert store.count() == len(rows)
        assert self.crop_files() == {f"crops/{r['crop_key']}" for r in rows}


def reference(
    x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[list[int], np.ndarray]:
    """Brute-force top k (positions = insertion order = rowid order), ties by position."""
    s = x.astype(np.float64) @ q.astype(np.float64)
    pos = np.arange(len(x)) if mask is None else np.flatnonzero(mask)
    order = pos[np.lexsort((pos, -s[pos]))]
    return order[:k].tolist(), s


def assert_ranking(hits: list[Hit], ids: list[str], ref_pos: list[int], s: np.ndarray) -> None:
    """The hits are the reference top k: same scores, same items (near-ties may swap)."""
    got = [h.item.item_id for h in hits]
    want = [ids[p] for p in ref_pos]
    assert len(got) == len(want)
    np.testing.assert_allclose([h.score for h in hits], s[ref_pos], atol=1e-5)
    if got != want:
        where = {item_id: p for p, item_id in enumerate(ids)}
        assert len(set(got)) == len(got)
        for g, w in zip(got, want, strict=True):
            assert abs(s[where[g]] - s[where[w]]) < 1e-5, (g, w)


def grouped_reference(
    s: np.ndarray, labels: list[str | None], k: int, mask: np.ndarray | None = None
) -> list[int]:
    pos = np.arange(len(s)) if mask is None else np.flatnonzero(mask)
    out, seen = [], set()
    for p in pos[np.lexsort((pos, -s[pos]))].tolist():
        key = ("item", p) if labels[p] is None else ("label", labels[p])
        if key not in seen:
            seen.add(key)
            out.append(p)
            if len(out) == k:
                break
    return out


# ------------------------------------------------------------------------------------ fixtures


class Gallery:
    """2,000 random items over 6 cameras (3 items on a seventh, rare one), mixed offsets."""

    def __init__(self, backend: Backend) -> None:
        rng = np.random.default_rng(7)
        n = 2000
        self.backend = backend
        self.root = backend.root
        self.x = unit(rng, n)
        self.cameras = [f"cam{i % 6}" for i in range(n)]
        for p in (100, 900, 1700):
            self.cameras[p] = "cam'); DROP TABLE items;--"  # rare, and hostile to string SQL
        self.times = [T0 + timedelta(minutes=i) for i in range(n)]
        self.identity = [f"p{rng.integers(150)}" if i % 3 else None for i in range(n)]
        self.track = [f"t{rng.integers(400)}" if i % 2 else None for i in range(n)]
        self.store = backend.open()
        added = self.store.add(
            "main",
            [
                new_item(
                    self.x[i],
                    self.cameras[i],
                    self.times[i].astimezone(OFFSETS[i % 3]),
                    self.identity[i],
                    self.track[i],
                )
                for i in range(n)
            ],
        )
        self.ids = [a.item_id for a in added]
        self.queries = unit(rng, 8)

    def mask(self, f: SearchFilter) -> np.ndarray:
        m = np.ones(len(self.x), dtype=bool)
        for p in range(len(self.x)):
            cam, t = self.cameras[p], self.times[p]
            if f.cameras is not None and cam not in f.cameras:
                m[p] = False
            if cam in f.exclude_cameras:
                m[p] = False
            if f.since is not None and t < f.since:
                m[p] = False
            if f.until is not None and t > f.until:
                m[p] = False
            if f.exclude_item == self.ids[p]:
                m[p] = False
        return m


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory):
    """One Milvus Lite database for the module (each test takes a collection prefix of its own).

    A store kept open for the whole module keeps the embedded server running between tests.
    """
    db = tmp_path_factory.mktemp("milvus") / "milvus.db"
    keeper = Backend("milvus", db.parent, db).open()
    yield db
    keeper.close()


def make_backend(request: pytest.FixtureRequest, name: str, root: Path) -> Backend:
    return Backend(name, root, request.getfixturevalue("lite_db") if name == "milvus" else None)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    b = make_backend(request, request.param, tmp_path)
    yield b
    b.cleanup()


@pytest.fixture(scope="module", params=BACKENDS)
def gallery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    g = Gallery(make_backend(request, request.param, tmp_path_factory.mktemp("gallery")))
    yield g
    g.store.close()
    g.backend.cleanup()


@pytest.fixture
def store(backend: Backend):
    s = backend.open()
    yield s
    s.close()


@pytest.fixture
def faiss_store(tmp_path: Path):
    s = FaissSqliteStore(tmp_path, dim=DIM)
    yield s
    s.close()


RARE = "cam'); DROP TABLE items;--"
TZ = timezone(timedelta(hours=-3))
FILTERS: dict[str, Callable[[Gallery], SearchFilter]] = {
    "none": lambda g: SearchFilter(),
    "cameras": lambda g: SearchFilter(cameras=frozenset({"cam1", "cam4"})),
    "exclude_cameras": lambda g: SearchFilter(exclude_cameras=frozenset({"cam0", "cam2", "cam3"})),
    "since": lambda g: SearchFilter(since=(T0 + timedelta(minutes=1500)).astimezone(TZ)),
    "until": lambda g: SearchFilter(until=T0 + timedelta(minutes=300)),
    "window": lambda g: SearchFilter(
        since=T0 + timedelta(minutes=200), until=(T0 + timedelta(minutes=1200)).astimezone(TZ)
    ),
    "combined": lambda g: SearchFilter(
        cameras=frozenset({"cam1", "cam2", "cam5", RARE}),
        exclude_cameras=frozenset({"cam2"}),
        since=T0 + timedelta(minutes=50),
        until=T0 + timedelta(minutes=1800),
        exclude_item=g.ids[1801],
    ),
    "exclude_item": lambda g: SearchFilter(exclude_item=g.ids[5]),
    "exclude_item_filtered": lambda g: SearchFilter(
        cameras=frozenset({"cam5"}), exclude_item=g.ids[5]
    ),
    "rare_camera": lambda g: SearchFilter(cameras=frozenset({RARE})),
    "three_minutes": lambda g: SearchFilter(
        since=T0 + timedelta(minutes=1000), until=T0 + timedelta(minutes=1002)
    ),
    "nothing": lambda g: SearchFilter(cameras=frozenset()),
    "inverted_window": lambda g: SearchFilter(since=T0 + timedelta(days=2), until=T0),
}


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
        assert f"crops/site-A_1/{a0[:2]}/{a0}.png" in files
        assert len(files) == 3
        hits = store.search("site-A_1", x[1], 1)
        assert hits[0].item == added[1]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert store.get("nope") is None
        assert store.get_embedding("nope") is None
        assert store.get_image("nope") is None
        assert store.delete("nope") is False
        assert store.search("unknown", x[0], 5) == []
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


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["", "../x", "a b", "a" * 65, "a/b", "é", "x\n", ".", None, 3])
def test_bad_gallery_names(store: GalleryStore, backend: Backend, name: object) -> None:
    v = unit(np.random.default_rng(0), 1)[0]
    with pytest.raises(StoreError):
        store.add(name, [new_item(v)])
    with pytest.raises(StoreError):
        store.search(name, v, 3)
    assert store.counts() == {}
    assert backend.crop_files() == set()
    assert not (backend.root / "x").exists()
    assert store.add("a" * 64, [new_item(v)])  # 64 characters are fine


def bad_items(v: np.ndarray) -> dict[str, NewItem]:
    nan = v.copy()
    nan[3] = np.nan
    inf = v.copy()
    inf[0] = np.inf
    return {
        "short": new_item(v[:-1]),
        "long": new_item(np.append(v, 0.0)),
        "2d": new_item(v.reshape(1, -1)),
        "1536": new_item(unit(np.random.default_rng(0), 1, 1536)[0]),
        "nan": new_item(nan),
        "inf": new_item(inf),
        "text": new_item("not a vector"),  # type: ignore[arg-type]
        "naive": new_item(v, ts=datetime(2024, 1, 1)),
        "no_camera": new_item(v, camera=""),
        "empty_image": new_item(v, image=b""),
        "bad_type": new_item(v, image_type="jpeg"),
    }


@pytest.mark.parametrize("case", list(bad_items(np.zeros(DIM, np.float32))))
def test_bad_items_write_nothing(store: GalleryStore, backend: Backend, case: str) -> None:
    v = unit(np.random.default_rng(3), 2)
    store.add("g", [new_item(v[0])])
    before_files, before_counts = backend.crop_files(), store.counts()
    if not backend.milvus:
        generation = store.index_info()["g"]["generation"]
    with pytest.raises(StoreError):
        store.add("g", [new_item(v[1]), bad_items(v[1])[case]])  # the good one is refused too
    with pytest.raises(StoreError):
        store.add("fresh", [bad_items(v[1])[case]])
    assert store.counts() == before_counts
    assert backend.crop_files() == before_files
    assert store.count("g") == 1 and store.count("fresh") == 0
    if not backend.milvus:
        assert store.index_info()["g"]["generation"] == generation
        assert "fresh" not in store.index_info()


def test_bad_search_arguments(store: GalleryStore) -> None:
    v = unit(np.random.default_rng(4), 1)[0]
    store.add("g", [new_item(v)])
    for k in (0, -1, 1.5, True, None):
        with pytest.raises(StoreError):
            store.search("g", v, k)  # type: ignore[arg-type]
    bad_queries = [v[:10], np.full(DIM, np.nan, np.float32), np.append(v, 1)]
    for q in bad_queries:
        with pytest.raises(StoreError):
            store.search("g", q, 1)
    with pytest.raises(StoreError):
        store.search("g", v, 1, group_by="camera")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.search("g", v, 1, where=SearchFilter(since=datetime(2024, 1, 1)))
    with pytest.raises(StoreError):
        store.search("g", v, 1, where=SearchFilter(until=datetime(2024, 1, 1)))
    assert len(store.search("g", v, np.int64(3))) == 1


def test_store_misuse(backend: Backend) -> None:
    with pytest.raises(StoreError):
        backend.open(index="NotAnIndex")
    with pytest.raises(StoreError):
        backend.open(dim=0)
    s = backend.open()
    if not backend.milvus:  # one FAISS store per directory; Milvus serves many replicas
        with pytest.raises(StoreError, match="another store"):
            backend.open()
    s.add("g", [new_item(unit(np.random.default_rng(0), 1)[0])])
    s.close()
    s.close()  # idempotent
    calls = [
        lambda: s.add("g", [new_item(np.ones(DIM, np.float32) / 8)]),
        lambda: s.search("g", np.ones(DIM, np.float32) / 8, 1),
        lambda: s.get("x"),
        lambda: s.get_image("x"),
        lambda: s.counts(),
        lambda: s.delete("x"),
    ]
    if not backend.milvus:
        calls.append(lambda: s.snapshot())
    for call in calls:
        with pytest.raises(StoreError):
            call()
    with pytest.raises(StoreError, match="64-d"):
        backend.open(dim=128)
    backend.open().close()  # the failed opens left no lock behind


def test_hostile_strings(store: GalleryStore, backend: Backend) -> None:
    """Camera ids and labels are arbitrary user text: quotes, backslashes, expression syntax."""
    hostile = [
        'c"a',
        "c'a",
        "c\\",
        '\\"',
        'x" or gallery != "',
        "x' || true || '",
        "line\nbreak",
        "cr\rtab\t",
        "{cams}",
        "%s %(x)s",
        "é ✓ 漢字",
        RARE,
    ]
    rng = np.random.default_rng(13)
    x = unit(rng, 3 * len(hostile))
    items = [
        new_item(x[i], hostile[i % len(hostile)], T0 + timedelta(seconds=i), hostile[i // 3 % 5])
        for i in range(len(x))
    ]
    added = store.add("g", items)
    ids = [a.item_id for a in added]
    counts = store.counts()["g"]
    assert counts == dict.fromkeys(hostile, 3)
    for h in hostile:
        mine = {ids[i] for i in range(len(x)) if hostile[i % len(hostile)] == h}
        for q in x[:3]:
            hits = store.search("g", q, 100, where=SearchFilter(cameras=frozenset({h})))
            assert {hit.item.item_id for hit in hits} == mine, h
            assert {hit.item.camera_id for hit in hits} == {h}
            hits = store.search("g", q, 100, where=SearchFilter(exclude_cameras=frozenset({h})))
            assert len(hits) == len(x) - 3 and not mine & {hit.item.item_id for hit in hits}
    grouped = store.search("g", x[0], 100, group_by="identity")
    assert sorted(h.item.identity for h in grouped) == sorted(hostile[:5])
    for a, it in zip(added, items, strict=True):
        got = store.get(a.item_id)
        assert (got.camera_id, got.identity) == (it.camera_id, it.identity)
    bad_ids = [*hostile, 'x" or item_id != "', ids[0] + '" or "1" == "1', "", "a" * 65]
    for bad in bad_ids:
        assert store.get(bad) is None
        assert store.get_image(bad) is None
        assert store.get_embedding(bad) is None
        assert store.delete(bad) is False
        hits = store.search("g", x[0], 100, where=SearchFilter(exclude_item=bad))
        assert len(hits) == len(x)
    assert store.count("g") == len(x)
    backend.assert_consistent(store)


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


def test_restart_reuses_matching_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x, queries = unit(rng, 300, 1536), unit(rng, 5, 1536)
    with FaissSqliteStore(tmp_path) as s:
        added = s.add("a", [new_item(v, f"c{i % 4}") for i, v in enumerate(x[:200])])
        s.add("b", [new_item(v, "c9") for v in x[200:]])
        s.delete(added[3].item_id)
        f = SearchFilter(cameras=frozenset({"c1", "c9"}))
        before = [
            [(h.item, h.score) for h in s.search(g, q, 12, where=f)] for g in "ab" for q in queries
        ]
        counts = s.counts()
    assert (tmp_path / "index" / "a.faiss").is_file()
    assert json.loads((tmp_path / "index" / "a.json").read_text())["generation"] == 2
    with FaissSqliteStore(tmp_path) as s:
        assert s.index_origin == {"a": "snapshot", "b": "snapshot"}
        after = [
            [(h.item, h.score) for h in s.search(g, q, 12, where=f)] for g in "ab" for q in queries
        ]
        assert after == before
        assert s.counts() == counts
        assert_consistent(s, tmp_path)
    with FaissSqliteStore(tmp_path, snapshot=False) as s:
        assert s.index_origin == {"a": "rebuilt", "b": "rebuilt"}
        assert [
            [(h.item, h.score) for h in s.search(g, q, 12, where=f)] for g in "ab" for q in queries
        ] == before


def test_restart_rebuilds_stale_or_broken_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = unit(rng, 60)
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        first = s.add("g", [new_item(v) for v in x[:30]])
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "index", old)
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert s.index_origin == {"g": "snapshot"}
        second = s.add("g", [new_item(v) for v in x[30:]])
        s.delete(first[0].item_id)
    shutil.rmtree(tmp_path / "index")
    shutil.copytree(old, tmp_path / "index")  # the index from before, behind SQLite's back
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert s.index_origin == {"g": "rebuilt"}
        assert_consistent(s, tmp_path)
        assert s.search("g", x[45], 1)[0].item.item_id == second[15].item_id
        assert s.search("g", x[0], 1)[0].item.item_id != first[0].item_id
    # A snapshot whose sidecar matches but whose content does not is caught too.
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert s.index_origin == {"g": "snapshot"}
    (tmp_path / "index" / "g.faiss").write_bytes(b"garbage")
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert s.index_origin == {"g": "rebuilt"}
        assert_consistent(s, tmp_path)
    with FaissSqliteStore(tmp_path, dim=DIM, index="HNSW16") as s:  # another kind: rebuilt
        assert s.index_origin == {"g": "rebuilt"}
        assert_consistent(s, tmp_path)


def test_orphan_crops_removed_on_open(tmp_path: Path) -> None:
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        s.add("g", [new_item(unit(np.random.default_rng(0), 1)[0])])
    stray = tmp_path / "crops" / "g" / "ab" / "abcdef.jpg"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"left by a crash")
    (tmp_path / "index" / "g.faiss.tmp").write_bytes(b"half a snapshot")
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert not stray.exists()
        assert not (tmp_path / "index" / "g.faiss.tmp").exists()
        assert_consistent(s, tmp_path)


# ------------------------------------------------------------------------------------ crashes

CHILD = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from service.store import FaissSqliteStore, NewItem

    root, rnd = Path(sys.argv[1]), int(sys.argv[2])
    store = FaissSqliteStore(root, dim=64, **json.loads(sys.argv[4]))
    print("READY", flush=True)
    acked = []
    for i in range(100000):
        n = 1 + i % 4
        rng = np.random.default_rng(rnd * 100000 + i)
        x = rng.standard_normal((n, 64)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        tz = timezone(timedelta(hours=(i % 5) - 2))
        items = [
            NewItem(x[j], f"cam{(i + j) % 3}", datetime(2024, 1, 1, tzinfo=tz)
                    + timedelta(seconds=i * 10 + j), f"crop-{rnd}-{i}-{j}".encode() * 9,
                    "image/jpeg", identity=f"p{i % 7}" if j % 2 else None)
            for j in range(n)
        ]
        gallery = "g1" if i % 2 else "g2"
        added = store.add(gallery, items)
        for j, a in enumerate(added):
            print("A", json.dumps({"id": a.item_id, "gallery": gallery, "seed": rnd * 100000 + i,
                  "j": j, "camera": a.camera_id, "ts": a.timestamp.isoformat(),
                  "identity": a.identity, "image": f"crop-{rnd}-{i}-{j}"}))
        acked.extend(a.item_id for a in added)
        sys.stdout.flush()
        if i % 5 == 4:
            victim = acked.pop(len(acked) // 2)
            print("X", victim, flush=True)  # about to delete: either outcome is fine
            assert store.delete(victim)
            print("D", victim, flush=True)
        if i % 9 == 8:
            store.snapshot()
    """
)


@pytest.mark.parametrize(
    "options", [{}, {"train_size": 30}], ids=["default", "auto-past-its-threshold"]
)
def test_kill_9_loses_no_acknowledged_write(tmp_path: Path, options: dict) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "data"
    rnd_gen = random.Random(11)
    acked: dict[str, dict] = {}
    deleted: set[str] = set()
    deleting: set[str] = set()
    for rnd in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(rnd), str(REPO), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
            time.sleep(rnd_gen.uniform(0.05, 0.7))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        lines = out.split("\n")[:-1]  # a line cut by the kill has no newline: not acknowledged
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "A":
                rec = json.loads(rest)
                acked[rec["id"]] = rec
            elif kind == "X":
                deleting.add(rest)
            elif kind == "D":
                deleted.add(rest)
        with FaissSqliteStore(root, dim=64, **options) as s:
            assert_auto_consistent(s, root)  # index == SQLite, rows <-> crops, no orphans
            for g, info in s.index_info().items():
                if options and s.count(g) >= options["train_size"]:
                    assert info["exact"] is False, g
            stored = {r[1] for r in sqlite_rows(root)}
            live = [r for i, r in acked.items() if i not in deleting]
            assert {r["id"] for r in live} <= stored
            assert not deleted & stored
            assert s.count() == len(stored)
            for item_id in deleted:
                assert s.get(item_id) is None
            for rec in live:
                item = s.get(rec["id"])
                assert item is not None, rec
                assert (item.gallery, item.camera_id, item.identity) == (
                    rec["gallery"],
                    rec["camera"],
                    rec["identity"],
                )
                assert item.timestamp.isoformat() == rec["ts"]
                assert s.get_image(rec["id"]) == (rec["image"].encode() * 9, "image/jpeg")
                rng = np.random.default_rng(rec["seed"])
                x = rng.standard_normal((1 + (rec["seed"] % 100000) % 4, 64)).astype(np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                np.testing.assert_array_equal(s.get_embedding(rec["id"]), x[rec["j"]])
                assert s.search(rec["gallery"], x[rec["j"]], 1)[0].item.item_id == rec["id"]
    assert len(acked) > 20  # the child got real work done between kills
    assert len(acked) > 80 or not options  # enough for both galleries to pass the threshold


# ------------------------------------------------------------------------------------ disk full


def test_disk_full_writing_crops(
    faiss_store: FaissSqliteStore, tmp_path: Path, monkeypatch
) -> None:
    store = faiss_store
    x = unit(np.random.default_rng(8), 20)
    store.add("g", [new_item(v) for v in x[:5]])
    files, info = crop_files(tmp_path), store.index_info()
    real = faiss_sqlite._write_file
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(path: Path, data: bytes) -> None:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n < 4:
            return real(path, data)
        with open(path, "xb") as fh:  # a partial file, as a real ENOSPC would leave
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faiss_sqlite, "_write_file", flaky)
    with pytest.raises(StoreFullError):
        store.add("g", [new_item(v) for v in x[5:15]])
    with pytest.raises(StoreFullError):
        store.add("g", [new_item(x[15])])  # the single-item path
    assert crop_files(tmp_path) == files
    assert store.index_info() == info
    assert store.count("g") == 5
    monkeypatch.setattr(faiss_sqlite, "_write_file", real)
    store.add("g", [new_item(v) for v in x[5:15]])
    assert store.count("g") == 15
    assert_consistent(store, tmp_path)


def test_disk_full_in_sqlite(faiss_store: FaissSqliteStore, tmp_path: Path) -> None:
    store = faiss_store
    x = unit(np.random.default_rng(9), 150)
    store.add("g", [new_item(v) for v in x[:10]])
    files, info, counts = crop_files(tmp_path), store.index_info(), store.counts()
    q = x[3]
    before = [(h.item, h.score) for h in store.search("g", q, 5)]
    conn = store._wconn  # the writer connection: max_page_count is per connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreFullError, match="full"):
        store.add("g", [new_item(v) for v in x[10:]])
    with pytest.raises(StoreFullError):
        store.add("new", [new_item(v) for v in x[10:]])
    assert crop_files(tmp_path) == files
    assert store.index_info() == info
    assert store.counts() == counts
    assert [(h.item, h.score) for h in store.search("g", q, 5)] == before
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.add("g", [new_item(v) for v in x[10:]])
    assert store.count("g") == 150
    assert_consistent(store, tmp_path)


# ------------------------------------------------------------------------------------ other kinds


@pytest.mark.parametrize(
    ("factory", "recall"), [("HNSW32", 0.9), ("IVF16,Flat", 0.9), ("IVF16,PQ8", 0.8)]
)
def test_approximate_kinds(tmp_path: Path, factory: str, recall: float, monkeypatch) -> None:
    monkeypatch.setattr(faiss_sqlite, "COMPACT_FRACTION", 0.05)  # compact after 64 deletions
    rng = np.random.default_rng(10)
    n = 1200
    centres = unit(rng, 40)  # clustered, like embeddings of people seen several times
    x = centres[rng.integers(40, size=n)] + 0.15 * rng.standard_normal((n, DIM)).astype("f4")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = centres[:20] + 0.15 * rng.standard_normal((20, DIM)).astype("f4")
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cams = [f"c{i % 4}" if i not in (11, 500, 1111) else "rare" for i in range(n)]

    def open_store(**kw: object) -> FaissSqliteStore:
        return FaissSqliteStore(tmp_path, dim=DIM, index=factory, train_size=800, **kw)

    def add(lo: int, hi: int) -> list[str]:
        return [a.item_id for a in s.add("g", [new_item(x[p], cams[p]) for p in range(lo, hi)])]

    s = open_store()
    ids = add(0, 600)
    if factory.startswith("IVF"):  # below train_size: exact flat search
        assert s.index_info()["g"]["exact"] is True
        ref, sc = reference(x[:600], queries[0], 10)
        assert_ranking(s.search("g", queries[0], 10), ids, ref, sc)
    ids += add(600, n)
    assert s.index_info()["g"]["exact"] is False

    def check(store: FaissSqliteStore, alive: np.ndarray) -> None:
        found = 0
        for q in queries:
            ref, sc = reference(x, q, 10, alive)
            hits = store.search("g", q, 10)
            assert len(hits) == 10
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            pos = [ids.index(h.item.item_id) for h in hits]
            assert alive[pos].all()
            np.testing.assert_allclose(scores, sc[pos], atol=1e-5)  # scores are true cosines
            found += len(set(pos) & set(ref))
            f = SearchFilter(cameras=frozenset({"rare"}))  # selective: exact
            ref, sc = reference(x, q, 10, alive & np.array([c == "rare" for c in cams]))
            assert_ranking(store.search("g", q, 10, where=f), ids, ref, sc)
            f = SearchFilter(cameras=frozenset({"c1"}))  # 300 items: exact too
            ref, sc = reference(x, q, 7, alive & np.array([c == "c1" for c in cams]))
            assert_ranking(store.search("g", q, 7, where=f), ids, ref, sc)
            f = SearchFilter(exclude_cameras=frozenset({"c1", "c2"}), exclude_item=ids[600])
            hits = store.search("g", q, 10, where=f)  # approximate, with a negative selector
            assert len(hits) == 10
            assert not {h.item.camera_id for h in hits} & {"c1", "c2"}
            assert ids[600] not in {h.item.item_id for h in hits}
            assert alive[[ids.index(h.item.item_id) for h in hits]].all()
        assert found / (10 * len(queries)) >= recall
        for p in range(0, n, 97):  # stored items find themselves
            if alive[p]:
                assert store.search("g", x[p], 1)[0].item.item_id == ids[p]

    alive = np.ones(n, dtype=bool)
    check(s, alive)
    for p in (0, 11, 77, 500, 600, 1199):
        assert s.delete(ids[p])
        alive[p] = False
    if factory.startswith("HNSW"):
        assert s.index_info()["g"]["tombstones"] == 6
    for q in x[[0, 77, 600, 1199]]:
        hits = s.search("g", q, n)
        assert len(hits) == n - 6
        assert alive[[ids.index(h.item.item_id) for h in hits]].all()
    check(s, alive)
    assert_consistent(s, tmp_path)
    s.close()
    with open_store() as s:
        assert s.index_origin == {"g": "snapshot"}
        check(s, alive)
        assert_consistent(s, tmp_path)
        if factory.startswith("HNSW"):  # many deletions: HNSW compacts its tombstones
            for p in range(1, 80):
                if alive[p]:
                    s.delete(ids[p])
                    alive[p] = False
            info = s.index_info()["g"]
            assert info["ntotal"] <= n - 64
            assert info["ntotal"] == info["live"] + info["tombstones"]
        check(s, alive)
        assert_consistent(s, tmp_path)
    with open_store(snapshot=False) as s:
        assert s.index_origin == {"g": "rebuilt"}
        assert s.index_info()["g"]["exact"] is False
        check(s, alive)
        assert_consistent(s, tmp_path)


def clustered(rng: np.random.Generator, n: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around ``clusters`` centres, and 20 queries near the first centres."""
    centres = unit(rng, clusters)
    x = centres[rng.integers(clusters, size=n)] + 0.15 * rng.standard_normal((n, DIM)).astype("f4")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = centres[:20] + 0.15 * rng.standard_normal((20, DIM)).astype("f4")
    return x, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def test_auto_index_moves_to_ivf_at_the_threshold(tmp_path: Path, monkeypatch) -> None:
    """auto: exact below train_size, IVF from it on; filtered search stays exact throughout."""
    rng = np.random.default_rng(21)
    n, threshold = 2600, 2000
    x, queries = clustered(rng, n, 60)
    cams = [f"c{i % 8}" for i in range(n)]
    stamps = [T0 + timedelta(seconds=i) for i in range(n)]

    def open_store(**kw: object) -> FaissSqliteStore:
        return FaissSqliteStore(tmp_path, dim=DIM, train_size=threshold, **kw)  # index="auto"

    def add(lo: int, hi: int) -> list[str]:
        got = s.add("g", [new_item(x[p], cams[p], stamps[p]) for p in range(lo, hi)])
        return [a.item_id for a in got]

    def check(store: FaissSqliteStore, upto: int, alive: np.ndarray, exact: bool) -> None:
        live = alive.copy()
        live[upto:] = False
        found = 0
        for q in queries:
            ref, sc = reference(x, q, 10, live)
            hits = store.search("g", q, 10)
            if exact:
                assert_ranking(hits, ids, ref, sc)
            pos = [ids.index(h.item.item_id) for h in hits]
            assert live[pos].all() and len(pos) == 10
            np.testing.assert_allclose([h.score for h in hits], sc[pos], atol=1e-5)
            found += len(set(pos) & set(ref))
            # positive filters are exact on the IVF too: a camera, a 10% window, both
            since, until = stamps[upto // 2], stamps[upto // 2 + upto // 10 - 1]
            in_window = np.array([since <= t <= until for t in stamps])
            on_c3 = np.array([c == "c3" for c in cams])
            for where, mask in [
                (SearchFilter(cameras=frozenset({"c3"})), on_c3),
                (SearchFilter(since=since, until=until), in_window),
                (SearchFilter(cameras=frozenset({"c3", "c5"}), since=since), None),
            ]:
                if mask is None:
                    mask = np.array([c in ("c3", "c5") for c in cams]) & np.array(
                        [t >= since for t in stamps]
                    )
                ref, sc = reference(x, q, 10, live & mask)
                assert_ranking(store.search("g", q, 10, where=where), ids, ref, sc)
            # exclusions only: approximate like an unfiltered search, never an excluded item
            where = SearchFilter(exclude_cameras=frozenset({"c0"}), exclude_item=ids[5])
            hits = store.search("g", q, 10, where=where)
            assert len(hits) == 10
            assert all(h.item.camera_id != "c0" and h.item.item_id != ids[5] for h in hits)
        assert found / (10 * len(queries)) >= 0.95

    s = open_store()
    ids = add(0, threshold - 1)
    info = s.index_info()["g"]
    assert (info["index"], info["factory"], info["train_size"]) == ("auto", "IVF32,PQ16x4fs", 2000)
    assert info["exact"] is True
    alive = np.ones(n, dtype=bool)
    check(s, threshold - 1, alive, exact=True)
    ids += add(threshold - 1, threshold)  # the item that reaches the threshold
    assert s.index_info()["g"]["exact"] is False
    ids += add(threshold, n)

    def no_sqlite_scan(*args: object) -> None:
        raise AssertionError("a search read the embeddings from SQLite")

    monkeypatch.setattr(FaissSqliteStore, "_exact", no_sqlite_scan)
    check(s, n, alive, exact=False)
    for p in (0, 3, 5, 700, 2100, n - 1):
        assert s.delete(ids[p])
        alive[p] = False
    check(s, n, alive, exact=False)
    assert_auto_consistent(s, tmp_path)
    s.close()
    assert (tmp_path / "index" / "g.ann.faiss").is_file()
    with open_store() as s:
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["exact"] is False
        check(s, n, alive, exact=False)
        assert_auto_consistent(s, tmp_path)
    with open_store(snapshot=False) as s:  # retrained from SQLite
        assert s.index_origin == {"g": "rebuilt"}
        assert s.index_info()["g"]["exact"] is False
        check(s, n, alive, exact=False)
        assert_auto_consistent(s, tmp_path)
    with FaissSqliteStore(tmp_path, dim=DIM, index="Flat") as s:  # forced exact: the flat half
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["exact"] is True
        check(s, n, alive, exact=True)
        assert_consistent(s, tmp_path)
    with open_store() as s:  # untouched under Flat: both halves still match SQLite
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["exact"] is False
    with FaissSqliteStore(tmp_path, dim=DIM, index="Flat") as s:
        s.delete(ids[1])
        alive[1] = False
    assert not (tmp_path / "index" / "g.ann.faiss").exists()
    with open_store() as s:  # the flat snapshot, and the candidate index trained again
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["exact"] is False
        check(s, n, alive, exact=False)
        assert_auto_consistent(s, tmp_path)


def assert_auto_consistent(store: FaissSqliteStore, root: Path) -> None:
    """assert_consistent, and the candidate index holds exactly the same rowids."""
    assert_consistent(store, root)
    for g, gi in store._indexes.items():
        if gi.ann is not None:
            np.testing.assert_array_equal(gi.ann_ids(), store.index_ids(g))


def test_auto_reuses_a_flat_snapshot(tmp_path: Path) -> None:
    """A gallery written under index=Flat opens under auto (and back) without a rebuild."""
    rng = np.random.default_rng(22)
    x = unit(rng, 50)
    with FaissSqliteStore(tmp_path, dim=DIM, index="Flat") as s:
        s.add("g", [new_item(v) for v in x])
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["index"] == "auto"
        s.add("g", [new_item(x[0])])
    with FaissSqliteStore(tmp_path, dim=DIM, index="Flat") as s:
        assert s.index_origin == {"g": "snapshot"}
        assert_consistent(s, tmp_path)
    with FaissSqliteStore(tmp_path, dim=DIM, train_size=40) as s:  # over the threshold: trains
        assert s.index_origin == {"g": "snapshot"}
        assert s.index_info()["g"]["exact"] is False
        assert_consistent(s, tmp_path)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"index": ""}, "'auto' or a FAISS factory string"),
        ({"index": "auto:5000"}, "bad index 'auto:5000'"),
        ({"index": "NotAnIndex"}, "not 'auto' and not a FAISS factory string"),
        ({"index": "IDMap,Flat"}, "IDMap"),
        ({"train_size": 0}, "train_size must be an integer >= 1"),
        ({"train_size": True}, "train_size must be an integer >= 1"),
        ({"train_size": 1.5}, "train_size must be an integer >= 1"),
        ({"nprobe": 0}, "nprobe must be an integer >= 1"),
        ({"ef_search": -1}, "ef_search must be an integer >= 1"),
        ({"index": "IVF64,Flat", "train_size": 10}, "train_size 10 is below nlist 64"),
    ],
)
def test_bad_index_settings_are_refused(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)):
        FaissSqliteStore(tmp_path, dim=DIM, **kw)
    with FaissSqliteStore(tmp_path, dim=DIM) as s:  # nothing was left locked or half made
        assert s.count() == 0


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
        time.sleep(2.0)
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


# ------------------------------------------------------------------------------------ Milvus only


@needs_milvus
def test_milvus_filter_literals_round_trip() -> None:
    """User text in an expression is one string literal that parses back to exactly itself."""
    from milvus_lite.search.filter.tokens import TokenKind, tokenize

    from service.store.milvus import _literal, filter_expression

    rng = random.Random(15)
    alphabet = ['"', "'", "\\", "\n", "\r", "\t", "\0", "{", "}", "[", "]", " ", "a", "é", "漢"]
    samples = ["", 'x" or gallery != "', "\\", '\\"', "a\\nb", "{cams}", RARE]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(300)]
    for text in samples:
        tokens = [t for t in tokenize(_literal(text)) if t.kind != TokenKind.EOF]
        assert len(tokens) == 1 and tokens[0].kind == TokenKind.STRING
        assert tokens[0].value == text
    expr = filter_expression(
        "g", SearchFilter(cameras=frozenset({'a" or "1" == "1'}), exclude_item='x" or "')
    )
    assert expr == 'gallery == "g" and camera_id in ["a\\" or \\"1\\" == \\"1"]'  # no id clause
    assert filter_expression("g", SearchFilter(cameras=frozenset())) is None


@needs_milvus
@pytest.mark.parametrize("gallery", ["milvus"], indirect=True, ids=["milvus-lite"])
def test_milvus_search_past_topk_limit(gallery: Gallery, monkeypatch) -> None:
    """Past Milvus's top-k limit the store ranks the filtered items itself, exactly."""
    from service.store import milvus

    monkeypatch.setattr(milvus, "MAX_TOPK", 40)
    f = FILTERS["combined"](gallery)
    mask = gallery.mask(f)
    for q in gallery.queries[:2]:
        ref, s = reference(gallery.x, q, 100, mask)
        assert_ranking(gallery.store.search("main", q, 100, where=f), gallery.ids, ref, s)
        ref = grouped_reference(s, gallery.identity, 30)
        hits = gallery.store.search("main", q, 30, group_by="identity")
        assert_ranking(hits, gallery.ids, ref, s)


@needs_milvus
def test_milvus_replicas_see_each_others_writes(lite_db: Path, tmp_path: Path) -> None:
    """Two stores on one Milvus (two service replicas): an acknowledged write is visible to the
    other's next read (Strong consistency), and both reach the crops."""
    a = Backend("milvus", tmp_path, lite_db)
    b = Backend("milvus", tmp_path, lite_db)
    b.prefix = a.prefix
    x = unit(np.random.default_rng(16), 20)
    with a.open() as one, b.open() as two:
        for i, v in enumerate(x):
            (added,) = one.add("g", [new_item(v, f"c{i % 2}", image=b"crop%d" % i)])
            assert two.search("g", v, 1)[0].item == added
            assert two.get_image(added.item_id) == (b"crop%d" % i, "image/jpeg")
        victim = two.search("g", x[5], 1)[0].item.item_id
        assert two.delete(victim)
        assert one.get(victim) is None
        assert victim not in {h.item.item_id for h in one.search("g", x[5], 20)}
        assert one.counts() == two.counts() == {"g": {"c0": 10, "c1": 9}}


@needs_milvus
@pytest.mark.parametrize("index", ["IVF_FLAT", "HNSW", "AUTOINDEX"])
def test_milvus_index_kinds(backend_milvus: Backend, index: str) -> None:
    """Other index kinds open, report their kind, and find stored items and filtered ones."""
    x = unit(np.random.default_rng(17), 300)
    with backend_milvus.open(index=index) as s:
        assert s.index_type == index
        ids = [a.item_id for a in s.add("g", [new_item(v, f"c{i % 3}") for i, v in enumerate(x)])]
        for p in range(0, 300, 37):
            assert s.search("g", x[p], 1)[0].item.item_id == ids[p]
            hits = s.search("g", x[p], 5, where=SearchFilter(cameras=frozenset({"c1"})))
            assert len(hits) == 5 and {h.item.camera_id for h in hits} == {"c1"}
    with backend_milvus.open(index="FLAT") as s:  # an existing collection keeps its index
        assert s.index_type == index


@pytest.fixture
def backend_milvus(lite_db: Path, tmp_path: Path) -> Backend:
    return Backend("milvus", tmp_path, lite_db)


@needs_milvus
def test_milvus_disk_full_writing_crops(backend_milvus: Backend, monkeypatch) -> None:
    from service.store.milvus import LocalCropStore

    x = unit(np.random.default_rng(18), 20)
    with backend_milvus.open() as store:
        store.add("g", [new_item(v) for v in x[:5]])
        files, counts = backend_milvus.crop_files(), store.counts()
        real = LocalCropStore._write
        calls = {"n": 0}
        lock = threading.Lock()

        def flaky(self: LocalCropStore, key: str, data: bytes) -> Path:
            with lock:
                calls["n"] += 1
                n = calls["n"]
            if n < 4:
                return real(self, key, data)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(LocalCropStore, "_write", flaky)
        with pytest.raises(StoreFullError):
            store.add("g", [new_item(v) for v in x[5:15]])
        with pytest.raises(StoreFullError):
            store.add("g", [new_item(x[15])])
        assert backend_milvus.crop_files() == files
        assert store.counts() == counts
        monkeypatch.setattr(LocalCropStore, "_write", real)
        store.add("g", [new_item(v) for v in x[5:15]])
        assert store.count("g") == 15
        backend_milvus.assert_consistent(store)


@needs_milvus
def test_milvus_failed_insert_leaves_nothing(backend_milvus: Backend, monkeypatch) -> None:
    """Milvus refusing the insert: the crops written for it are removed, nothing is stored."""
    from service.store.milvus import MilvusUnavailableError

    x = unit(np.random.default_rng(19), 6)
    with backend_milvus.open() as store:
        store.add("g", [new_item(x[0])])
        files = backend_milvus.crop_files()

        def refuse(*args: object, **kwargs: object) -> None:
            from pymilvus import MilvusException

            raise MilvusException(message="node down")

        monkeypatch.setattr(store._client, "insert", refuse)
        with pytest.raises(MilvusUnavailableError, match="node down"):
            store.add("g", [new_item(v) for v in x[1:]])
        monkeypatch.undo()
        assert backend_milvus.crop_files() == files
        assert store.count("g") == 1
        backend_milvus.assert_consistent(store)


@needs_milvus
def test_milvus_orphan_crops_swept(backend_milvus: Backend) -> None:
    with backend_milvus.open() as s:
        (kept,) = s.add("g", [new_item(unit(np.random.default_rng(0), 1)[0])])
        stray = backend_milvus.root / "crops" / "g" / "ab" / ("ab" + "0" * 30 + ".jpg")
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"left by a crash")
        half = stray.with_name(".x.jpg.1234.tmp")
        half.write_bytes(b"never renamed")
        assert s.remove_orphan_crops() == 0  # young files: another replica may be mid-add
        old = time.time() - 7200
        for p in [stray, half, *(backend_milvus.root / "crops").rglob(f"{kept.item_id}.*")]:
            os.utime(p, (old, old))
        assert s.remove_orphan_crops() == 1
        assert not stray.exists() and not half.exists()
        assert s.get_image(kept.item_id) is not None
        backend_milvus.assert_consistent(s)


MILVUS_CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from datetime import datetime, timedelta, timezone
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from service.store import NewItem
    from service.store.milvus import MilvusStore

    store = MilvusStore(sys.argv[1], dim=64, crops=sys.argv[2])
    out = threading.Lock()

    def writer(t):  # three at once, as the service's thread pool adds
        for i in range(t, 100000, 3):
            rng = np.random.default_rng(i)
            x = rng.standard_normal((2, 64)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            items = [NewItem(x[j], f"cam{j}", datetime(2024, 1, 1, tzinfo=timezone.utc)
                             + timedelta(seconds=i), f"crop-{i}-{j}".encode(), "image/jpeg")
                     for j in range(2)]
            added = store.add("g", items)
            with out:
                print("A", json.dumps({"ids": [a.item_id for a in added], "i": i}), flush=True)

    print("READY", flush=True)
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


@needs_milvus
def test_milvus_lite_kill_9_keeps_acknowledged_items(tmp_path: Path) -> None:
    """An add acknowledged by Milvus Lite survives kill -9 of its process and a restart, with
    adds arriving from several threads at once (as from the service's thread pool)."""
    script = tmp_path / "child.py"
    script.write_text(MILVUS_CHILD)
    db, crops = tmp_path / "kill.db", tmp_path / "crops"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(crops), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        time.sleep(1.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    acked = [json.loads(line[2:]) for line in out.split("\n")[:-1] if line.startswith("A ")]
    assert len(acked) > 5, err  # the child got real work done before the kill
    from service.store.milvus import MilvusStore

    with MilvusStore(str(db), dim=64, crops=crops) as s:
        for rec in acked[:-10:25] + acked[-10:]:  # a spread, and the last ones before the kill
            rng = np.random.default_rng(rec["i"])
            x = rng.standard_normal((2, 64)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            for j, item_id in enumerate(rec["ids"]):
                assert s.get(item_id) is not None, rec
                assert s.get_image(item_id) == (f"crop-{rec['i']}-{j}".encode(), "image/jpeg")
                np.testing.assert_array_equal(s.get_embedding(item_id), x[j])
        assert s.count("g") >= 2 * len(acked)  # an add cut by the kill may have landed too
        assert s.search("g", x[0], 1)[0].item.item_id == acked[-1]["ids"][0]
        everything = {r["item_id"] for b in s._scan("", ["item_id"]) for r in b}
        assert {i for rec in acked for i in rec["ids"]} <= everything
