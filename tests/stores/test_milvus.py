"""The Milvus store's own behaviour: expressions, the top-k limit, replicas, index kinds,
crops, failed inserts and Milvus Lite's kill -9 recovery (Milvus Lite, not a server)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from service.store import (
    SearchFilter,
)

from .support import (
    FILTERS,
    RARE,
    REPO,
    Backend,
    Gallery,
    assert_ranking,
    grouped_reference,
    needs_milvus,
    needs_milvus_server,
    new_item,
    reference,
    unit,
)

# ------------------------------------------------------------------------------------ Milvus only


@needs_milvus
def test_milvus_filter_literals_round_trip() -> None:
    """User text in an expression is one string literal that parses back to exactly itself."""
    from milvus_lite.search.filter.tokens import TokenKind, tokenize

    from service.store.milvus.expressions import filter_expression, literal

    rng = random.Random(15)
    alphabet = ['"', "'", "\\", "\n", "\r", "\t", "\0", "{", "}", "[", "]", " ", "a", "é", "漢"]
    samples = ["", 'x" or gallery != "', "\\", '\\"', "a\\nb", "{cams}", RARE]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(300)]
    for text in samples:
        tokens = [t for t in tokenize(literal(text)) if t.kind != TokenKind.EOF]
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
    from service.store.milvus import search as milvus_search

    monkeypatch.setattr(milvus_search, "MAX_TOPK", 40)
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
@pytest.mark.parametrize(
    ("code", "kind"),
    [(2, "unavailable"), (1100, "refused"), (5, "refused")],
    ids=["outage", "invalid-parameter", "illegal-argument-before-2.3"],
)
def test_milvus_failed_insert_leaves_nothing(
    backend_milvus: Backend, monkeypatch, code: int, kind: str
) -> None:
    """Milvus failing the insert: the crops written for it are removed, nothing is stored, and
    an outage (retry later: 503) is told apart from a refusal of the data (retrying will not
    help), which a real Milvus 2.3 server gave every ingest when the schema had nullable
    fields."""
    from pymilvus import MilvusException

    from service.store import StoreRefusedError
    from service.store.milvus import MilvusUnavailableError

    expected = MilvusUnavailableError if kind == "unavailable" else StoreRefusedError
    x = unit(np.random.default_rng(19), 6)
    with backend_milvus.open() as store:
        store.add("g", [new_item(x[0])])
        files = backend_milvus.crop_files()

        def refuse(*args: object, **kwargs: object) -> None:
            raise MilvusException(code=code, message="no luck")

        monkeypatch.setattr(store.conn.client, "insert", refuse)
        with pytest.raises(expected, match="no luck"):
            store.add("g", [new_item(v) for v in x[1:]])
        monkeypatch.undo()
        assert backend_milvus.crop_files() == files
        assert store.count("g") == 1
        backend_milvus.assert_consistent(store)


@needs_milvus_server
@pytest.mark.parametrize("consistency", ["Strong", "Session"])
def test_milvus_server_reads_its_own_writes(
    milvus_server: str, tmp_path: Path, consistency: str
) -> None:
    """On a real server a replica reads its own writes at once, at Strong and at Session:
    its inserts (pymilvus tracks them) and its deletes (pymilvus does not track them: the
    store leaves the ids it recently deleted out of what it reads). At Session, no search and
    no read by id after a delete asks for Strong."""
    b = Backend("milvus-server", tmp_path, milvus_server)
    try:
        with b.open(consistency=consistency) as store:
            levels: list[str] = []
            client = store.conn.client
            for name in ("search", "query"):
                call = getattr(client, name)

                def spy(*args, _call=call, **kwargs):
                    if kwargs.get("output_fields") != ["count(*)"]:
                        levels.append(kwargs.get("consistency_level"))
                    return _call(*args, **kwargs)

                setattr(client, name, spy)
            x = unit(np.random.default_rng(23), 30)
            for v in x:
                (added,) = store.add("g", [new_item(v, identity="p")])
                assert store.get(added.item_id) is not None
                assert store.search("g", v, 1)[0].item.item_id == added.item_id
                assert store.search("g", v, 1, group_by="identity")[0].item.item_id == added.item_id
            assert store.count("g") == 30
            store.delete(added.item_id)
            assert store.get(added.item_id) is None and store.count("g") == 29
            assert all(h.item.item_id != added.item_id for h in store.search("g", x[-1], 5))
            (again,) = store.add("g", [new_item(x[-1], identity="p")])
            assert store.search("g", x[-1], 1)[0].item.item_id == again.item_id
            store.delete(again.item_id)  # a delete right after an insert
            assert store.get(again.item_id) is None and store.count("g") == 29
            assert all(h.item.item_id != again.item_id for h in store.search("g", x[-1], 5))
            assert store.track("g", "none") == []
            assert set(levels) == {consistency}
    finally:
        b.cleanup()


@needs_milvus_server
def test_milvus_server_hnsw_keeps_camera_and_time_filters_exact(
    milvus_server: str, tmp_path: Path
) -> None:
    """An approximate index may miss what a filter lets through; a filtered search scores
    the items that pass exactly (as the FAISS store does), so it equals brute force.

    At this size Milvus searches its unsealed segments by brute force, HNSW or not, so this
    test holds the semantics; bench/search.py --milvus-server shows the index's misses at
    10k items (filtered exactness 0-4% before, 100% after)."""
    from datetime import timedelta

    from .support import T0

    N = 1000
    b = Backend("milvus-server", tmp_path, milvus_server)
    try:
        with b.open(index="HNSW") as store:
            assert store.index_type == "HNSW"
            x = unit(np.random.default_rng(5), N)
            cameras = [f"c{i % 6}" for i in range(N)]
            times = [T0 + timedelta(seconds=i) for i in range(N)]
            added = store.add(
                "g", [new_item(v, c, t) for v, c, t in zip(x, cameras, times, strict=True)]
            )
            ids = [a.item_id for a in added]
            filters = {
                "one camera": (
                    SearchFilter(cameras=frozenset({"c1"})),
                    np.array([c == "c1" for c in cameras]),
                ),
                "not c2": (
                    SearchFilter(exclude_cameras=frozenset({"c2"})),
                    np.array([c != "c2" for c in cameras]),
                ),
                "window": (
                    SearchFilter(since=times[100], until=times[299]),
                    (np.arange(N) >= 100) & (np.arange(N) <= 299),
                ),
            }
            queries = unit(np.random.default_rng(6), 5)
            for where, mask in filters.values():
                for q in queries:
                    ref, scores = reference(x, q, 10, mask)
                    assert_ranking(store.search("g", q, 10, where=where), ids, ref, scores)
    finally:
        b.cleanup()


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
        everything = {r["item_id"] for b in s.conn.scan("", ["item_id"]) for r in b}
        assert {i for rec in acked for i in rec["ids"]} <= everything


@needs_milvus
def test_milvus_ef_setting_reaches_the_searches(tmp_path: Path) -> None:
    """SONA_MILVUS_EF is the ef of an unfiltered HNSW search; more results asked raise it, a
    filter's share raises it further (up to EF_MAX); 0 is refused at start-up."""
    from pydantic import ValidationError

    from service.runtime import open_store
    from service.settings import Settings
    from service.store.milvus import search as milvus_search

    settings = Settings(
        store="milvus",
        milvus_uri=str(tmp_path / "m.db"),
        milvus_index="HNSW",
        milvus_ef=48,
        data_dir=tmp_path,
    )
    store = open_store(settings, dim=8)
    try:
        assert store.ef_search == 48
        assert store.searcher.params(11)["params"]["ef"] == 48
        assert store.searcher.params(100)["params"]["ef"] == 100
        assert store.searcher.params(11, widen=20.0)["params"]["ef"] == 960
        assert store.searcher.params(11, widen=1e4)["params"]["ef"] == milvus_search.EF_MAX
    finally:
        store.close()
    assert Settings().milvus_ef == milvus_search.EF_SEARCH
    with pytest.raises(ValidationError):
        Settings(milvus_ef=0)
