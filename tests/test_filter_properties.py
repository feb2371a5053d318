"""Property tests: the search-filter parser, and filtered search against brute force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.routes.search import camera_names
from service.store import FaissSqliteStore, NewItem, SearchFilter

CAMERAS = ["c1", "c2", "lobby 3", "gate'4", 'd"5', "ñ6"]
BASE = datetime(2024, 1, 1, tzinfo=UTC)


@given(st.lists(st.text(max_size=20), max_size=6))
def test_camera_lists_split_on_commas_and_drop_blanks(values: list[str]) -> None:
    names = camera_names(values)
    expected = {part.strip() for value in values for part in value.split(",") if part.strip()}
    assert names == (frozenset(expected) or None)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("props")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(120, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = FaissSqliteStore(root, dim=16)
    items = [
        NewItem(
            embedding=v,
            camera_id=CAMERAS[i % len(CAMERAS)],
            timestamp=BASE + timedelta(minutes=7 * i),
            image=b"\xff\xd8\xff",
            image_type="image/jpeg",
            identity=f"p{i % 9}",
        )
        for i, v in enumerate(vectors)
    ]
    stored = store.add("props", items)
    yield store, stored, vectors
    store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cameras=st.none() | st.sets(st.sampled_from([*CAMERAS, "nowhere"]), min_size=1),
    excluded=st.sets(st.sampled_from(CAMERAS)),
    since=st.none() | st.integers(0, 900),
    length=st.none() | st.integers(0, 900),
    k=st.integers(1, 130),
    query_index=st.integers(0, 119),
)
def test_filtered_search_is_the_brute_force_top_k(
    store, cameras, excluded, since, length, k, query_index
) -> None:
    db, stored, vectors = store
    start = None if since is None else BASE + timedelta(minutes=since)
    end = None if start is None or length is None else start + timedelta(minutes=length)
    where = SearchFilter(
        cameras=frozenset(cameras) if cameras else None,
        exclude_cameras=frozenset(excluded),
        since=start,
        until=end,
    )
    hits = db.search("props", vectors[query_index], k, where)

    def passes(item) -> bool:
        return (
            (cameras is None or item.camera_id in cameras)
            and item.camera_id not in excluded
            and (start is None or item.timestamp >= start)
            and (end is None or item.timestamp <= end)
        )

    scores = vectors @ vectors[query_index]
    allowed = [i for i, item in enumerate(stored) if passes(item)]
    expected = sorted(allowed, key=lambda i: (-scores[i], i))[:k]
    assert [h.item.item_id for h in hits] == [stored[i].item_id for i in expected]
