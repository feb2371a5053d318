"""Gallery stores: what every backend refuses, the same way, and what that leaves behind
(nothing): bad gallery names, bad items, bad search arguments, misuse after close, and
hostile strings in every text field. Run against every backend of ``support.BACKENDS``."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from service.store import (
    GalleryStore,
    NewItem,
    SearchFilter,
    StoreError,
    StoreLockedError,
)

from .support import (
    DIM,
    RARE,
    T0,
    Backend,
    new_item,
    unit,
)

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
        with pytest.raises(StoreLockedError, match="another store"):  # typed: callers branch on it
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
