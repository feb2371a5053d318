"""The FAISS store's own machinery: snapshots, real kill -9 rounds, disk full in crops and
SQLite, approximate index kinds and the ``auto`` policy."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from service.store import (
    FaissSqliteStore,
    SearchFilter,
    StoreError,
    StoreFullError,
)
from service.store.faiss import index as faiss_index
from service.store.faiss import search as faiss_search

from .support import (
    DIM,
    REPO,
    T0,
    assert_consistent,
    assert_ranking,
    crop_files,
    new_item,
    reference,
    sqlite_rows,
    unit,
)


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
    rnd = -1
    # five rounds; more on a busy machine until both galleries passed the training threshold
    while (rnd := rnd + 1) < 5 or (options and len(acked) <= 80 and rnd < 40):
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
                # a camera filter searches the flat index exactly, whatever the kind: the item is
                # indexed (unfiltered, past the threshold, the candidate index is approximate and
                # may miss it, depending on the CPU's rounding)
                exact = SearchFilter(cameras=frozenset({rec["camera"]}))
                hit = s.search(rec["gallery"], x[rec["j"]], 1, where=exact)[0]
                assert hit.item.item_id == rec["id"]
    assert len(acked) > 20  # the child got real work done between kills
    assert len(acked) > 80 or not options  # enough for both galleries to pass the threshold


# ------------------------------------------------------------------------------------ disk full


def test_disk_full_in_sqlite(faiss_store: FaissSqliteStore, tmp_path: Path) -> None:
    store = faiss_store
    x = unit(np.random.default_rng(9), 150)
    store.add("g", [new_item(v) for v in x[:10]])
    files, info, counts = crop_files(tmp_path), store.index_info(), store.counts()
    q = x[3]
    before = [(h.item, h.score) for h in store.search("g", q, 5)]
    conn = store.catalog.writer  # the writer connection: max_page_count is per connection
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
    monkeypatch.setattr(faiss_index, "COMPACT_FRACTION", 0.05)  # compact after 64 deletions
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

    monkeypatch.setattr(faiss_search, "exact", no_sqlite_scan)
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
