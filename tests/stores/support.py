"""Helpers of the store suite: random unit vectors, a brute-force reference, the backends
(``faiss``: real SQLite and FAISS in tmp_path; ``milvus-lite``; ``milvus-server`` when
``SONA_TEST_MILVUS_URI`` names a real Milvus) and what each keeps on disk."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
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
)

REPO = Path(__file__).resolve().parents[2]
DIM = 64  # small vectors keep the suite fast; the default 1536 is exercised where it matters
T0 = datetime(2024, 5, 1, tzinfo=UTC)
OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(
    not HAVE_MILVUS, reason="pymilvus / milvus-lite not installed: pip install 'sona-reid[milvus]'"
)
#: PyPI's ``milvus`` package embeds a real Milvus standalone server (2.3), started once per
#: session by the ``milvus_server`` fixture; or SONA_TEST_MILVUS_URI names one to use instead.
HAVE_MILVUS_SERVER = importlib.util.find_spec("pymilvus") is not None and (
    importlib.util.find_spec("milvus") is not None or bool(os.environ.get("SONA_TEST_MILVUS_URI"))
)
needs_milvus_server = pytest.mark.skipif(
    not HAVE_MILVUS_SERVER,
    reason="no Milvus server: pip install milvus (the embedded standalone server), or set "
    "SONA_TEST_MILVUS_URI",
)
BACKENDS = [
    "faiss",
    pytest.param("milvus", id="milvus-lite", marks=needs_milvus),
    pytest.param("milvus-server", id="milvus-server", marks=needs_milvus_server),
]


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

    Milvus: a collection prefix of its own in the shared Milvus Lite database or on the Milvus
    server (``db``: the .db path or the server's URI), crops under ``root/crops`` (the layout
    the FAISS store uses, so crop paths compare alike).
    """

    def __init__(self, name: str, root: Path, db: Path | str | None = None) -> None:
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
            kw.setdefault("index", "FLAT")  # exact, so brute force is the reference
        return MilvusStore(
            uri, dim=dim, collection_prefix=self.prefix, crops=self.root / "crops", **kw
        )

    def cleanup(self) -> None:
        """Drop this test's collection from a real Milvus (Milvus Lite's go with tmp_path)."""
        if self.name == "milvus-server":
            from pymilvus import MilvusClient

            client = MilvusClient(uri=str(self.db), token=os.environ.get("SONA_MILVUS_TOKEN", ""))
            client.drop_collection(f"{self.prefix}items")
            client.close()

    def crop_files(self) -> set[str]:
        return crop_files(self.root)

    def assert_consistent(self, store: GalleryStore) -> None:
        """Every row has its crop and every crop its row; counts agree with the rows."""
        if not self.milvus:
            assert_consistent(store, self.root)
            return
        rows = [
            r for batch in store.conn.scan("", ["item_id", "gallery", "crop_key"]) for r in batch
        ]
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
            if f.exclude_track is not None and f.exclude_track == self.track[p]:
                m[p] = False
        return m


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
    "exclude_track": lambda g: SearchFilter(exclude_track=g.track[1]),
    "exclude_track_filtered": lambda g: SearchFilter(
        cameras=frozenset({"cam1", "cam3"}), since=T0, exclude_track=g.track[3]
    ),
    "rare_camera": lambda g: SearchFilter(cameras=frozenset({RARE})),
    "three_minutes": lambda g: SearchFilter(
        since=T0 + timedelta(minutes=1000), until=T0 + timedelta(minutes=1002)
    ),
    "nothing": lambda g: SearchFilter(cameras=frozenset()),
    "inverted_window": lambda g: SearchFilter(since=T0 + timedelta(days=2), until=T0),
}
