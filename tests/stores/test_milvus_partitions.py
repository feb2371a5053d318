"""Day partitions on Milvus: retention and erasure drop whole days (rows and crop folders),
delete item by item only in the days they cover in part, and searches name only the days
they need. Run on the real Milvus standalone server and on Milvus Lite; a collection from
before day partitions (``gallery`` its partition key) keeps working item by item."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from service.store import SearchFilter
from service.store.milvus.partitions import (
    PartitionLimitError,
    day_of,
    parse_partition,
    partition_name,
)

from .support import (
    DIM,
    Backend,
    assert_ranking,
    needs_milvus,
    needs_milvus_server,
    new_item,
    reference,
    unit,
)

MILVUS = [
    pytest.param("milvus", id="milvus-lite", marks=needs_milvus),
    pytest.param("milvus-server", id="milvus-server", marks=needs_milvus_server),
]
D0 = datetime(2024, 6, 1, tzinfo=UTC)
HOURS = [1, 7, 11, 13, 18, 23]  # six items a day, on both sides of noon


class Days:
    """Four days of six items in gallery ``g`` (two cameras), and one day of ``other``."""

    def __init__(self, store, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.times = [D0 + timedelta(days=d, hours=h) for d in range(4) for h in HOURS]
        self.x = unit(rng, len(self.times))
        self.cams = [f"c{i % 2}" for i in range(len(self.times))]
        added = store.add(
            "g", [new_item(v, c, t) for v, c, t in zip(self.x, self.cams, self.times, strict=True)]
        )
        self.ids = [a.item_id for a in added]
        self.other = store.add("other", [new_item(v, "c0", D0) for v in unit(rng, 3)])
        self.queries = unit(rng, 4)

    def kept(self, store) -> set[str]:
        return {i for i in self.ids if store.get(i) is not None}


def days_held(store, gallery: str) -> set[date]:
    names = store.conn.client.list_partitions(store.conn.collection)
    return {p[1] for p in map(parse_partition, names) if p is not None and p[0] == gallery}


def day_folders(backend: Backend, gallery: str) -> set[str]:
    return {f.split("/")[2] for f in backend.crop_files() if f.startswith(f"crops/{gallery}/")}


def test_partition_names_are_safe_and_reversible() -> None:
    import re

    safe = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
    for gallery in ["g", "site-A_1", "x" * 64, "é漢 \"'; DROP", "_-_"]:
        name = partition_name(gallery, date(2024, 2, 29))
        assert safe.fullmatch(name)
        assert parse_partition(name) == (gallery, date(2024, 2, 29))
    assert partition_name("a", date(2024, 1, 1)) != partition_name("a_", date(2024, 1, 1))
    assert parse_partition("_default") is None
    assert parse_partition("gzz_20240101") is None
    assert day_of(datetime(2024, 1, 1, 23, 30, tzinfo=UTC) + timedelta(hours=1)) == date(2024, 1, 2)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_retention_drops_whole_days_and_their_crops_keeps_the_rest(backend: Backend) -> None:
    with backend.open() as s:
        assert s.day_partitions
        d = Days(s)
        assert days_held(s, "g") == {(D0 + timedelta(days=i)).date() for i in range(4)}
        assert day_folders(backend, "g") == {f"{D0 + timedelta(days=i):%Y%m%d}" for i in range(4)}
        cutoff = D0 + timedelta(days=1, hours=12)  # day 0 whole, day 1 up to noon
        gone = [i for i, t in zip(d.ids, d.times, strict=True) if t < cutoff]
        assert s.expire(cutoff, "g") == len(gone) == 9
        assert D0.date() not in days_held(s, "g")
        assert f"{D0:%Y%m%d}" not in day_folders(backend, "g")
        assert d.kept(s) == set(d.ids) - set(gone)  # the boundary day's afternoon stays
        assert all(s.get_image(i) is not None for i in d.kept(s))
        assert s.count("g") == len(d.ids) - len(gone)
        assert s.count("other") == 3  # another gallery's same day is not touched
        backend.assert_consistent(s)
        # a sweep over every gallery drops the other gallery's day too
        assert s.expire(D0 + timedelta(days=2)) == 3 + 3
        assert s.count("other") == 0 and s.galleries() == ["g"]
        assert days_held(s, "g") == {(D0 + timedelta(days=i)).date() for i in (2, 3)}
        backend.assert_consistent(s)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_delete_range_drops_covered_days_and_deletes_within_the_others(backend: Backend) -> None:
    with backend.open() as s:
        d = Days(s)
        t = d.times
        before = D0 + timedelta(days=2)  # days 0 and 1 whole
        assert s.delete_range("g", before=before) == 12
        assert days_held(s, "g") == {before.date(), (before + timedelta(days=1)).date()}
        # a camera: item by item, the day partitions stay
        assert s.delete_range("g", camera_id="c0", before=D0 + timedelta(days=3)) == 3
        assert len(days_held(s, "g")) == 2
        # since alone: the last day is whole from its first instant
        assert s.delete_range("g", since=D0 + timedelta(days=3)) == 6
        assert days_held(s, "g") == {before.date()}
        left = {i for i, ti, c in zip(d.ids, t, d.cams, strict=True) if ti.day == 3 and c == "c1"}
        assert d.kept(s) == left
        backend.assert_consistent(s)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_searches_across_days_are_exact(backend: Backend) -> None:
    """FLAT on the server: every window, one day or several, equals the brute force."""
    with backend.open() as s:
        d = Days(s)
        t = np.array(d.times)
        windows = [
            SearchFilter(),
            SearchFilter(since=D0 + timedelta(days=1, hours=12)),
            SearchFilter(until=D0 + timedelta(days=1)),  # day 1's first instant is in
            SearchFilter(since=D0 + timedelta(hours=20), until=D0 + timedelta(days=2, hours=2)),
            SearchFilter(since=D0 + timedelta(days=9)),
            SearchFilter(cameras=frozenset({"c1"}), since=D0 + timedelta(days=3)),
        ]
        for w in windows:
            mask = np.array(
                [
                    (w.since is None or ti >= w.since)
                    and (w.until is None or ti <= w.until)
                    and (w.cameras is None or c in w.cameras)
                    for ti, c in zip(t, d.cams, strict=True)
                ]
            )
            for q in d.queries:
                ref, sc = reference(d.x, q, 5, mask)
                assert_ranking(s.search("g", q, 5, where=w), d.ids, ref, sc)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_a_drop_killed_before_its_crops_leaves_orphans_the_sweep_removes(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between the partition drop and the crop folder (its stand-in: the folder's
    removal fails): no item lacks its crop, and remove_orphan_crops takes the leftovers."""
    with backend.open() as s:
        d = Days(s)

        def killed(prefix: str, older_than: float) -> int:
            raise OSError("killed")

        monkeypatch.setattr(s.crops, "delete_tree", killed)
        with pytest.raises(OSError, match="killed"):
            s.expire(D0 + timedelta(days=1), "g")
        monkeypatch.undo()
        assert all(s.get_image(i) is not None for i in d.kept(s))
        assert len(d.kept(s)) == 18 and f"{D0:%Y%m%d}" in day_folders(backend, "g")
        assert s.remove_orphan_crops(min_age_s=0) == 6
        backend.assert_consistent(s)


@pytest.mark.parametrize("backend", MILVUS[1:], indirect=True)
def test_a_partition_left_released_by_a_crash_still_searches_and_goes_next_sweep(
    backend: Backend,
) -> None:
    """Milvus releases a partition before dropping it: a crash in between leaves it
    released; searches naming it fall back to the gallery's expression, the sweep drops it."""
    with backend.open() as s:
        d = Days(s)
        s.conn.client.release_partitions(s.conn.collection, [partition_name("g", D0.date())])
        q = d.queries[0]
        mask = np.array([ti >= D0 + timedelta(days=1) for ti in d.times])
        ref, sc = reference(d.x, q, 5, mask)
        assert_ranking(s.search("g", q, 5), d.ids, ref, sc)
        s.expire(D0 + timedelta(days=1), "g")
        assert D0.date() not in days_held(s, "g")
        assert s.count("g") == 18
        backend.assert_consistent(s)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_replicas_adding_the_same_new_day_at_once_both_succeed(backend: Backend) -> None:
    stores = [backend.open() for _ in range(3)]
    try:
        x = unit(np.random.default_rng(5), 3)
        errors: list[BaseException] = []

        def add(n: int) -> None:
            try:
                stores[n].add("g", [new_item(x[n], "c", D0)])
            except BaseException as e:  # pragma: no cover - the failure is reported below
                errors.append(e)

        threads = [threading.Thread(target=add, args=(n,)) for n in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert days_held(stores[0], "g") == {D0.date()}
        assert stores[1].count("g") == 3
    finally:
        for st in stores:
            st.close()


@needs_milvus
@pytest.mark.parametrize("backend", MILVUS[:1], indirect=True)
def test_partition_limit_is_refused_clearly_mocked_server_error(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Milvus 2.3's error at rootCoord.maxPartitionNum (mocked: making 4,096 partitions on
    the test server takes minutes); the add is refused whole and leaves nothing."""
    from pymilvus import MilvusException

    with backend.open() as s:
        s.add("g", [new_item(unit(np.random.default_rng(1), 1)[0], "c", D0)])

        def full(*args: object, **kwargs: object) -> None:
            raise MilvusException(65535, "partition number (4096) exceeds max configuration")

        monkeypatch.setattr(s.conn.client, "create_partition", full)
        with pytest.raises(PartitionLimitError, match="maxPartitionNum"):
            s.add("g", [new_item(unit(np.random.default_rng(2), 1)[0], "c", D0 + timedelta(1))])
        s.add("g", [new_item(unit(np.random.default_rng(3), 1)[0], "c", D0)])  # a held day
        assert s.count("g") == 2
        backend.assert_consistent(s)


@pytest.mark.parametrize("backend", MILVUS, indirect=True)
def test_a_collection_with_gallery_as_partition_key_keeps_working(backend: Backend) -> None:
    """A collection made before day partitions: opened as it is, deletes item by item."""
    from service.store.milvus.collection import schema

    helper = Backend(backend.name, backend.root, backend.db)
    with helper.open() as h:  # a client on the same Milvus, to make the old collection with
        client = h.conn.client
        old = schema(DIM, gallery_partition_key=True)
        client.create_collection(f"{backend.prefix}items", schema=old)
        client.drop_collection(f"{helper.prefix}items")
    with backend.open() as s:
        assert not s.day_partitions
        d = Days(s)
        assert not days_held(s, "g")
        assert all(len(f.split("/")[2]) == 2 for f in backend.crop_files())  # <gallery>/<xx>/
        q = d.queries[0]
        ref, sc = reference(d.x, q, 5)
        assert_ranking(s.search("g", q, 5), d.ids, ref, sc)
        assert s.expire(D0 + timedelta(days=1), "g") == 6
        assert s.delete_range("g", before=D0 + timedelta(days=2)) == 6
        assert s.count("g") == 12 and s.galleries() == ["g", "other"]
        backend.assert_consistent(s)
