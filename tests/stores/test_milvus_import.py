"""A gallery import into a real Milvus server: several batches in flight, killed with kill -9
midway, run again: every item once (no duplicate rows), every crop in place, and searches
right after it (sealed) find the exact neighbours, filtered ones through the index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from service.store import FaissSqliteStore, SearchFilter
from service.transfer import export_gallery, import_gallery

from .support import T0, Backend, needs_milvus_server, new_item

pytestmark = needs_milvus_server

N, DIM, BATCH = 3000, 32, 100
REPO = Path(__file__).resolve().parents[2]

#: The killed import: small batches, four in flight; a line after each batch is acknowledged.
CHILD = """
import sys
from service.store.milvus import MilvusStore
from service.transfer import import_gallery

uri, prefix, crops, archive, batch = sys.argv[1:6]
store = MilvusStore(uri, dim=int(sys.argv[6]), collection_prefix=prefix, crops=crops)
store.import_batch, store.import_workers = int(batch), 4
restore = store.restore

def acknowledged(*args):
    done = restore(*args)
    print("batch", len(done), flush=True)
    return done

store.restore = acknowledged
import_gallery(store, archive)
print("finished", flush=True)
"""


def count(store) -> int:
    """Rows in the collection, duplicates included, read at Strong."""
    return int(store.conn.query("", ["count(*)"], level="Strong")[0]["count(*)"])


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, np.ndarray, list[str]]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with FaissSqliteStore(tmp_path / "source", dim=DIM) as src:
        items = [
            new_item(x[i], f"cam{i % 5}", T0 + timedelta(seconds=i), image=b"crop %d" % i)
            for i in range(N)
        ]
        ids = [a.item_id for a in src.add("site", items)]
        path = export_gallery(src, "site", tmp_path / "site.tar").path
    return path, x, ids


def test_an_import_killed_midway_resumes_without_duplicates(
    milvus_server: str, tmp_path: Path, archive
) -> None:
    path, x, ids = archive
    backend = Backend("milvus-server", tmp_path / "milvus", milvus_server)
    crops = backend.root / "crops"
    args = [milvus_server, backend.prefix, str(crops), str(path), str(BATCH), str(DIM)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        acknowledged = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("batch"):
                acknowledged += int(line.split()[1])
            if acknowledged >= 5 * BATCH or line.startswith("finished"):
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    store = backend.open(dim=DIM, index="HNSW")
    try:
        before = count(store)
        assert acknowledged <= before < N  # killed midway, no acknowledged batch lost

        result = import_gallery(store, path)
        assert result.sealed
        # an insert sent just before the kill may land after ``before`` was read
        assert result.skipped >= before and result.added + result.skipped == N

        # no duplicate rows: Milvus keeps a primary key inserted twice as two rows
        rows = store.conn.query("", ["item_id"], limit=N + 1000, level="Strong")
        stored = [r["item_id"] for r in rows]
        assert len(stored) == len(set(stored)) == N
        assert set(stored) == set(ids)
        assert count(store) == N
        for n in np.random.default_rng(0).choice(N, 50, replace=False).tolist():
            assert store.get_image(ids[n]) == (b"crop %d" % n, "image/jpeg")

        # sealed and indexed: the search right after the import finds the exact top 10
        found = 0
        for i in range(20):
            want = set(np.argsort(-(x @ x[i]))[:10].tolist())
            hits = store.search("site", x[i], 10)
            found += len({ids.index(h.item.item_id) for h in hits} & want)
        assert found / 200 >= 0.9

        # every row sealed and indexed: a camera filter passing 600 items goes to the index
        # (no vector fetched) and still finds the exact top 10 of the items that pass
        assert store.searcher.sealed()
        camera = np.arange(N) % 5 == 0
        found = 0
        for i in range(20):
            s = x @ x[i]
            s[~camera] = -np.inf
            want = set(np.argsort(-s)[:10].tolist())
            hits = store.search("site", x[i], 10, where=SearchFilter(cameras=frozenset({"cam0"})))
            assert all(h.item.camera_id == "cam0" for h in hits)
            found += len({ids.index(h.item.item_id) for h in hits} & want)
        assert found / 200 >= 0.9
    finally:
        store.close()
        backend.cleanup()
