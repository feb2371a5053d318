"""Provenance, tracks, erasure and retention on every backend (``faiss``, ``milvus-lite``,
``milvus-server``), a FAISS folder and a Milvus collection made before provenance, and a
retention sweep killed with kill -9 midway (FAISS)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from service.store import (
    DegenerateQueryError,
    FaissSqliteStore,
    GalleryStore,
    NewItem,
    SearchFilter,
    StoreError,
    StoreRefusedError,
    UnknownGalleryError,
)

from .support import (
    DIM,
    REPO,
    T0,
    Backend,
    assert_consistent,
    crop_files,
    needs_milvus,
    needs_milvus_server,
    new_item,
    unit,
)


def with_provenance(item: NewItem, n: int) -> NewItem:
    return NewItem(
        embedding=item.embedding,
        camera_id=item.camera_id,
        timestamp=item.timestamp,
        image=item.image,
        image_type=item.image_type,
        identity=item.identity,
        track_id=item.track_id,
        source=f"rtsp://cam.example/stream-{n}?channel=1 ünïcode",
        frame=1000 + n,
        box=(n, 2 * n, 40 + n, 90 + n),
    )


def test_provenance_is_stored_searched_listed_and_restored(
    store: GalleryStore, backend: Backend
) -> None:
    rng = np.random.default_rng(3)
    x = unit(rng, 6)
    items = [with_provenance(new_item(x[i], track="t1"), i) for i in range(5)]
    items.append(new_item(x[5]))  # none at all
    added = store.add("g", items)
    for n, a in enumerate(added[:5]):
        assert (a.source, a.frame, a.box) == (items[n].source, 1000 + n, (n, 2 * n, 40 + n, 90 + n))
        got = store.get(a.item_id)
        assert got == a
    assert store.get(added[5].item_id).source is None
    assert (store.get(added[5].item_id).frame, store.get(added[5].item_id).box) == (None, None)
    hit = store.search("g", x[2], 1)[0]
    assert hit.item == added[2]
    assert [i for i, _ in store.track("g", "t1")] == added[:5]
    exported = [pair for batch in store.iter_items("g") for pair in batch]
    assert [i for i, _ in exported] == added
    for a in added:
        assert store.delete(a.item_id)
    again = [
        NewItem(v, i.camera_id, i.timestamp, b"crop", i.image_type, i.identity, i.track_id,
                i.source, i.frame, i.box)
        for i, v in exported
    ]  # fmt: skip
    restored = store.restore("g", again, [i.item_id for i, _ in exported],
                             [i.created_at for i, _ in exported])  # fmt: skip
    assert restored == added
    backend.assert_consistent(store)


@pytest.mark.parametrize(
    "change",
    [
        {"source": ""},
        {"source": 7},
        {"source": "x" * 3000},
        {"frame": -1},
        {"frame": True},
        {"frame": 1.5},
        {"box": (1, 2, 3)},
        {"box": (1, 2, 0, 4)},
        {"box": (1, 2, 3, -4)},
        {"box": (1, 2, 3.5, 4)},
        {"box": "1,2,3,4"},
    ],
)
def test_bad_provenance_is_refused(store: GalleryStore, change: dict) -> None:
    item = new_item(unit(np.random.default_rng(0), 1)[0])
    fields = {**item.__dict__, **change}
    with pytest.raises(StoreError):
        store.add("g", [NewItem(**fields)])
    assert store.count() == 0


def _tracks(store: GalleryStore) -> dict[str, tuple[str, int]]:
    """Adds tracks to gallery g: t0..t5 on cam-a/cam-b, 3 crops each, 10 minutes apart."""
    rng = np.random.default_rng(5)
    x = unit(rng, 18)
    items = []
    for t in range(6):
        for j in range(3):
            when = T0 + timedelta(minutes=10 * t + j)
            items.append(new_item(x[3 * t + j], f"cam-{'ab'[t % 2]}", when, track=f"t{t}"))
    items.append(new_item(x[0], "cam-a", T0))  # no track: not listed
    store.add("g", items)
    store.add("other", [new_item(x[1], "cam-a", T0 + timedelta(days=1), track="t0")])
    return {f"t{t}": (f"cam-{'ab'[t % 2]}", t) for t in range(6)}


def test_list_tracks_pages_newest_first(store: GalleryStore) -> None:
    _tracks(store)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list_tracks("g", cursor=cursor, limit=4)
        seen.extend(page)
        pages += 1
        if cursor is None:
            break
    assert pages == 2
    assert [t.track_id for t in seen] == ["t5", "t4", "t3", "t2", "t1", "t0"]
    t3 = seen[2]
    assert (t3.gallery, t3.camera_id, t3.count) == ("g", "cam-b", 3)
    assert t3.first == T0 + timedelta(minutes=30)
    assert t3.last == T0 + timedelta(minutes=32)
    cams, _ = store.list_tracks("g", camera_id="cam-a")
    assert [t.track_id for t in cams] == ["t4", "t2", "t0"]
    window, _ = store.list_tracks(
        "g", since=T0 + timedelta(minutes=21), until=T0 + timedelta(minutes=40)
    )
    assert [t.track_id for t in window] == ["t4", "t3", "t2"]
    assert store.list_tracks("nothing-here") == ([], None)
    for bad in ("%%%", "bm90IGpzb24", "WzEsMl0"):
        with pytest.raises(StoreError):
            store.list_tracks("g", cursor=bad)
    with pytest.raises(StoreError):
        store.list_tracks("g", limit=0)


def test_delete_track_removes_its_items_and_crops(store: GalleryStore, backend: Backend) -> None:
    _tracks(store)
    before = store.count("g")
    assert store.delete_track("g", "t2") == 3
    assert store.delete_track("g", "t2") == 0
    assert store.count("g") == before - 3
    assert store.track("g", "t2") == []
    assert len(store.track("other", "t0")) == 1  # another gallery's track of that name stays
    assert [t.track_id for t in store.list_tracks("g")[0]] == ["t5", "t4", "t3", "t1", "t0"]
    hits = store.search("g", unit(np.random.default_rng(5), 18)[7], 20)
    assert all(h.item.track_id != "t2" for h in hits)
    backend.assert_consistent(store)


def test_delete_range_is_since_inclusive_before_exclusive(
    store: GalleryStore, backend: Backend
) -> None:
    _tracks(store)
    with pytest.raises(StoreError):
        store.delete_range("g")
    # cam-b holds t1, t3, t5 at minutes 10-12, 30-32, 50-52
    n = store.delete_range(
        "g", camera_id="cam-b", since=T0 + timedelta(minutes=11), before=T0 + timedelta(minutes=31)
    )
    assert n == 3  # minutes 11, 12 and 30
    left = {(i.camera_id, i.timestamp) for batch in store.iter_items("g") for i, _ in batch}
    assert ("cam-b", T0 + timedelta(minutes=10)) in left
    assert ("cam-b", T0 + timedelta(minutes=31)) in left
    assert ("cam-a", T0 + timedelta(minutes=20)) in left
    assert store.delete_range("g", before=T0 + timedelta(minutes=1)) == 2  # t0's first, untracked
    assert store.delete_range("g", camera_id="cam-a") == 8  # t0's two left, t2, t4
    assert store.count("other") == 1
    backend.assert_consistent(store)


def test_expire_sweeps_every_gallery_in_batches(store: GalleryStore, backend: Backend) -> None:
    _tracks(store)
    store.add("third", [new_item(unit(np.random.default_rng(1), 1)[0], ts=T0)])
    assert store.galleries() == ["g", "other", "third"]
    cutoff = T0 + timedelta(minutes=25)
    assert store.expire(cutoff, gallery="g", batch=4) == 10  # t0, t1, t2 and the untracked one
    assert store.count("third") == 1
    assert store.expire(cutoff, batch=2) == 1  # third's only item
    assert store.galleries() == ["g", "other"]
    assert store.expire(cutoff) == 0
    assert all(
        i.timestamp >= cutoff for g in ("g", "other") for b in store.iter_items(g) for i, _ in b
    )
    assert store.gallery_counts("g") == {"cam-a": 3, "cam-b": 6}
    assert store.gallery_counts("third") == {}
    with pytest.raises(StoreError):
        store.expire(cutoff.replace(tzinfo=None))
    backend.assert_consistent(store)


# ------------------------------------------------------------------ one call per need


def test_what_a_search_by_item_or_track_reads_in_one_call(store: GalleryStore) -> None:
    x = unit(np.random.default_rng(8), 4)
    added = store.add("g", [new_item(x[i], f"c{i % 2}", track="t" if i < 3 else None)
                            for i in range(4)])  # fmt: skip
    item, vector = store.get_with_embedding(added[1].item_id)
    assert item == added[1]
    np.testing.assert_array_equal(vector, x[1])
    assert store.get_with_embedding("nope") is None
    mean = x[:3].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(store.track_vector("g", "t"), mean / np.linalg.norm(mean), 1e-6)
    assert store.track_vector("g", "none") is None
    assert store.gallery_counts("g") == {"c0": 2, "c1": 2}
    store.add("flat", [new_item(x[0], track="u"), new_item(-x[0], track="u")])
    with pytest.raises(DegenerateQueryError):
        store.track_vector("flat", "u")
    with pytest.raises(UnknownGalleryError):
        store.search("nowhere", x[0], 3)
    assert store.search("g", x[0], 3, where=SearchFilter(since=T0 + timedelta(days=1))) == []
    for a in added:
        store.delete(a.item_id)
    with pytest.raises(UnknownGalleryError):  # emptied: as if it never was
        store.search("g", x[0], 3)


def test_tracks_is_never_an_item_id(store: GalleryStore) -> None:
    """``/gallery/tracks/...`` names the track routes: an import may not bring that id."""
    item = new_item(unit(np.random.default_rng(0), 1)[0])
    with pytest.raises(StoreError, match="tracks"):
        store.restore("g", [item], ["tracks"], [T0])
    assert store.get("tracks") is None
    assert store.count() == 0


# ------------------------------------------------------------------ data made before provenance


def test_a_faiss_folder_from_before_provenance_opens_and_takes_it(tmp_path: Path) -> None:
    x = unit(np.random.default_rng(2), 3)
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        old = s.add("g", [new_item(x[0], track="t"), new_item(x[1])])
    conn = sqlite3.connect(tmp_path / "gallery.sqlite3")  # back to what version 1 wrote
    for column in ("source", "frame", "box"):
        conn.execute(f"ALTER TABLE items DROP COLUMN {column}")
    conn.execute("DROP INDEX items_ts")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with FaissSqliteStore(tmp_path, dim=DIM) as s:
        assert [s.get(i.item_id) for i in old] == old
        new = s.add("g", [with_provenance(new_item(x[2], track="t"), 1)])[0]
        assert s.get(new.item_id).box == (1, 2, 41, 91)
        assert s.expire(T0 + timedelta(seconds=1)) == 3
    conn = sqlite3.connect(tmp_path / "gallery.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        FaissSqliteStore(tmp_path, dim=DIM)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("milvus", id="milvus-lite", marks=needs_milvus),
        pytest.param("milvus-server", id="milvus-server", marks=needs_milvus_server),
    ],
    indirect=True,
)
def test_a_milvus_collection_from_before_provenance_opens_and_refuses_it(
    backend: Backend,
) -> None:
    from pymilvus import DataType, MilvusClient

    helper = Backend(backend.name, backend.root, backend.db)
    with helper.open() as h:  # a client on the same Milvus, to make the old collection with
        client: MilvusClient = h.conn.client
        old = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        old.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=64)
        old.add_field("gallery", DataType.VARCHAR, max_length=64, is_partition_key=True)
        old.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        for name in ("camera_id", "timestamp", "identity", "track_id", "image_type"):
            old.add_field(name, DataType.VARCHAR, max_length=1024)
        old.add_field("ts", DataType.DOUBLE)
        old.add_field("crop_key", DataType.VARCHAR, max_length=512)
        old.add_field("created_at", DataType.VARCHAR, max_length=64)
        old.add_field("seq", DataType.INT64)
        client.create_collection(f"{backend.prefix}items", schema=old)
        client.drop_collection(f"{helper.prefix}items")
    x = unit(np.random.default_rng(4), 2)
    with backend.open() as s:
        assert s.provenance is False
        plain = s.add("g", [new_item(x[0])])[0]
        assert s.get(plain.item_id) == plain
        with pytest.raises(StoreRefusedError, match="before provenance"):
            s.add("g", [with_provenance(new_item(x[1]), 1)])
        assert s.count("g") == 1
        assert s.search("g", x[0], 1)[0].item == plain
        backend.assert_consistent(s)


# ------------------------------------------------------------------ retention killed midway

SWEEPER = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from service.store import FaissSqliteStore

    store = FaissSqliteStore(Path(sys.argv[1]), dim=64)
    print("READY", flush=True)
    while True:
        if not store.expire(datetime.fromisoformat(sys.argv[2]), batch=int(sys.argv[4])):
            print("DONE", flush=True)
            break
    """
)


def test_expire_killed_midway_leaves_whole_items_and_resumes(tmp_path: Path) -> None:
    """kill -9 during a retention sweep: on reopen every row has its crop and every crop its
    row, the index equals SQLite, nothing at or after the cutoff went, and a second sweep
    removes the rest."""
    root = tmp_path / "data"
    rng = np.random.default_rng(9)
    n = 3000
    x = unit(rng, n, 64)
    with FaissSqliteStore(root, dim=64) as s:
        for start in range(0, n, 500):
            for g in ("g1", "g2"):
                s.add(
                    g,
                    [
                        new_item(x[i], f"cam{i % 3}", T0 + timedelta(seconds=i))
                        for i in range(start, start + 500)
                    ],
                )
    cutoff = T0 + timedelta(seconds=2400)
    script = tmp_path / "sweep.py"
    script.write_text(SWEEPER)
    kept = 2 * (n - 2400)
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), cutoff.isoformat(), str(REPO), "7"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        with FaissSqliteStore(root, dim=64) as s:
            assert_consistent(s, root)  # rows <-> crops, index == SQLite
            late = SearchFilter(since=cutoff)
            assert sum(len(s.search(g, x[0], kept, where=late)) for g in ("g1", "g2")) == kept
            assert s.count() >= kept
        if "DONE" in out:
            break
    with FaissSqliteStore(root, dim=64) as s:
        left = s.count()
        assert left > kept  # the kills came before the sweep was done: not a no-op test
        assert s.expire(cutoff) == left - kept
        assert s.count() == kept
        assert_consistent(s, root)
    assert len(crop_files(root)) == kept
