"""Moving a gallery between backends: `sona gallery export` / `import`, without re-embedding.

FAISS -> Milvus is the migration a site makes; Milvus runs as Milvus Lite (embedded); a Milvus
cluster was not run. The Milvus tests are skipped where pymilvus / milvus-lite are missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import tarfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from service.store import (
    FaissSqliteStore,
    GalleryStore,
    Item,
    NewItem,
    SearchFilter,
    StoreError,
)
from service.transfer import export_gallery, import_gallery, read_manifest

DIM = 32
T0 = datetime(2024, 5, 1, tzinfo=UTC)
HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(
    not HAVE_MILVUS, reason="pymilvus / milvus-lite not installed: pip install 'sona-reid[milvus]'"
)
CAMERAS = ["lobby", "gate 2", 'cam"quoted', "cam\\back"]
TYPES = ["image/jpeg", "image/png", "image/webp"]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(store: GalleryStore, n: int = 120, gallery: str = "site-A") -> list[str]:
    """n items (one deleted afterwards) with every kind of metadata, and an exact duplicate."""
    rng = np.random.default_rng(0)
    x = unit(rng, n)
    x[7] = x[3]  # a tie: insertion order must survive the move
    offsets = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
    items = [
        NewItem(
            embedding=x[i],
            camera_id=CAMERAS[i % 4],
            timestamp=(T0 + timedelta(minutes=i, microseconds=i)).astimezone(offsets[i % 3]),
            image=f"crop {i}".encode() + rng.bytes(40),
            image_type=TYPES[i % 3],
            identity=f"p{i % 17}" if i % 3 else None,
            track_id=f"t{i % 29}" if i % 2 else None,
            # provenance on some: a file, a stream (no credentials), and none
            source=[None, "gate.mp4", "rtsp://10.0.0.9:554/lobby"][i % 3],
            frame=i * 7 if i % 3 else None,
            box=(i, 2 * i, 40 + i % 5, 100 + i % 9) if i % 3 == 1 else None,
        )
        for i in range(n)
    ]
    ids = [a.item_id for a in store.add(gallery, items[: n // 2])]
    ids += [a.item_id for a in store.add(gallery, items[n // 2 :])]
    store.add("other", items[:3])  # another gallery stays behind
    store.delete(ids.pop(11))
    return ids


def plain(item: Item | None) -> Item | None:
    """An item without its gallery's name (an import may rename the gallery)."""
    return None if item is None else dataclasses.replace(item, gallery="*")


def snapshot(store: GalleryStore, gallery: str, ids: list[str]) -> dict:
    """Everything the API can see of a gallery (scores apart, see ``same``)."""
    rng = np.random.default_rng(1)
    queries = unit(rng, 4)
    filters = [
        None,
        SearchFilter(cameras=frozenset({'cam"quoted', "lobby"})),
        SearchFilter(since=T0 + timedelta(minutes=30), until=T0 + timedelta(minutes=90)),
        SearchFilter(exclude_cameras=frozenset({"gate 2"}), exclude_item=ids[0]),
    ]
    searches = [
        [(plain(h.item), h.score) for h in store.search(gallery, q, k, where=f, group_by=g)]
        for q in [*queries, store.get_embedding(ids[3])]
        for f in filters
        for g in (None, "identity", "track")
        for k in (1, 10)
    ]
    return {
        "counts": store.counts()[gallery],
        "items": [plain(store.get(i)) for i in ids],
        "images": [store.get_image(i) for i in ids],
        "embeddings": [store.get_embedding(i).tobytes() for i in ids],
        "searches": searches,
    }


def same(a: dict, b: dict) -> None:
    """Two snapshots agree: items, crops, vectors; rankings with scores within float error."""
    for key in ("counts", "images", "embeddings", "items"):
        assert a[key] == b[key], key
    for ha, hb in zip(a["searches"], b["searches"], strict=True):
        np.testing.assert_allclose([s for _, s in ha], [s for _, s in hb], atol=1e-5)
        assert [i for i, _ in ha] == [i for i, _ in hb]


def milvus_args(tmp_path: Path) -> list[str]:
    return [
        "--store",
        "milvus",
        "--milvus-uri",
        str(tmp_path / "milvus.db"),
        "--crops-dir",
        str(tmp_path / "shared-crops"),
        "--data-dir",
        str(tmp_path / "unused"),
    ]


@needs_milvus
def test_faiss_to_milvus_and_back_without_reembedding(tmp_path: Path, capsys) -> None:
    from service.store.milvus import MilvusStore

    faiss_dir = tmp_path / "faiss"
    with FaissSqliteStore(faiss_dir, dim=DIM) as src:
        ids = fill(src)
        before = snapshot(src, "site-A", ids)
    archive = tmp_path / "site-A.tar"
    common = ["gallery", "export", "--store", "faiss", "--data-dir", str(faiss_dir)]
    assert main([*common, "--dim", str(DIM), "--gallery", "site-A", "--output", str(archive)]) == 0
    assert "exported 119 items of gallery 'site-A' (32-d)" in capsys.readouterr().out
    manifest = read_manifest(archive)
    assert (manifest["gallery"], manifest["dim"], manifest["count"]) == ("site-A", DIM, 119)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:3] == ["manifest.json", "items.jsonl", "embeddings.npy"]
    assert len(names) == 3 + 119 and names[3] == f"crops/{ids[0]}.jpg"

    args = ["gallery", "import", *milvus_args(tmp_path), "--input", str(archive)]
    assert main(args) == 0
    assert "imported 119 items into gallery 'site-A'" in capsys.readouterr().out
    assert main(args) == 0  # run again (an interrupted import): nothing twice
    assert "imported 0 items into gallery 'site-A' (119 already there)" in capsys.readouterr().out

    with MilvusStore(str(tmp_path / "milvus.db"), dim=DIM, crops=tmp_path / "shared-crops") as dst:
        # same ids, metadata (created_at too), crops, vectors, rankings
        same(snapshot(dst, "site-A", ids), before)
        assert dst.get(ids[0]).gallery == "site-A"
        assert dst.counts().keys() == {"site-A"}
    # and back into the embedded store (a rollback): ids and times kept there too
    with FaissSqliteStore(tmp_path / "back", dim=DIM) as again:
        back = import_gallery(again, archive, "again")
        assert (back.added, back.skipped) == (119, 0)
        same(snapshot(again, "again", ids), before)
        assert again.get(ids[0]).gallery == "again"
        again_twice = import_gallery(again, archive, "again")  # an import run again
        assert (again_twice.added, again_twice.skipped) == (0, 119)
        with pytest.raises(StoreError, match="another gallery"):
            import_gallery(again, archive, "third")  # the ids are taken
        assert again.count() == 119


@needs_milvus
def test_milvus_export_round_trip(tmp_path: Path) -> None:
    """Milvus -> archive -> another Milvus collection: identical, ids kept."""
    from service.store.milvus import MilvusStore

    db, crops = str(tmp_path / "m.db"), tmp_path / "crops"
    with MilvusStore(db, dim=DIM, crops=crops, collection_prefix="a_") as a:
        ids = fill(a)
        before = snapshot(a, "site-A", ids)
        export_gallery(a, "site-A", tmp_path / "x.tar")
    with MilvusStore(db, dim=DIM, crops=tmp_path / "crops-b", collection_prefix="b_") as b:
        result = import_gallery(b, tmp_path / "x.tar", "renamed")
        assert (result.added, result.skipped) == (119, 0)
        same(snapshot(b, "renamed", ids), before)
        with pytest.raises(StoreError, match="another gallery"):
            import_gallery(b, tmp_path / "x.tar", "third")  # the ids are taken


def test_export_refuses_a_store_the_service_holds(tmp_path: Path, capsys) -> None:
    with FaissSqliteStore(tmp_path, dim=DIM) as running:  # as `sona serve` would hold it
        fill(running, n=16)
        args = ["gallery", "export", "--store", "faiss", "--data-dir", str(tmp_path)]
        out = str(tmp_path / "x.tar")
        code = main([*args, "--dim", str(DIM), "--gallery", "site-A", "--output", out])
    assert code == 2
    err = capsys.readouterr().err
    assert "open in another store" in err and "stop it first" in err
    assert not (tmp_path / "x.tar").exists()


def test_broken_archives_are_refused(tmp_path: Path) -> None:
    with FaissSqliteStore(tmp_path / "src", dim=DIM) as src:
        fill(src, n=16)
        export_gallery(src, "site-A", tmp_path / "ok.tar")
        with pytest.raises(StoreError, match="empty or does not exist"):
            export_gallery(src, "nothing-here", tmp_path / "none.tar")
    assert not (tmp_path / "none.tar").exists()

    def rewrite(name: str, change) -> Path:
        out = tmp_path / f"{name}.tar"
        with tarfile.open(tmp_path / "ok.tar") as tar, tarfile.open(out, "w") as dst:
            for m in tar.getmembers():
                data = tar.extractfile(m).read()
                m, data = change(m, data)
                if m is not None:
                    m.size = len(data)
                    dst.addfile(m, io.BytesIO(data))
        return out

    def flip_crop(m, data):
        return m, (data[:-1] + bytes([data[-1] ^ 1])) if m.name.startswith("crops/") else data

    def drop_last_crop(m, data):
        return (None, data) if m.name == sorted_crops[-1] else (m, data)

    def bad_items(m, data):
        if m.name == "items.jsonl":
            data = data.replace(b'"lobby"', b'"elsewhere"', 1)
        return m, data

    with tarfile.open(tmp_path / "ok.tar") as tar:
        sorted_crops = [n for n in tar.getnames() if n.startswith("crops/")]
    cases = {
        "flipped": (flip_crop, "checksum"),
        "short": (drop_last_crop, "ends early"),
        "edited": (bad_items, "checksum"),
    }
    for name, (change, message) in cases.items():
        with FaissSqliteStore(tmp_path / name, dim=DIM) as dst, pytest.raises(StoreError) as e:
            import_gallery(dst, rewrite(name, change))
        assert message in str(e.value)
    with FaissSqliteStore(tmp_path / "wrong-dim", dim=DIM * 2) as dst:
        with pytest.raises(StoreError, match="another model"):
            import_gallery(dst, tmp_path / "ok.tar")
        assert dst.counts() == {}
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(StoreError, match="not a readable gallery export"):
        read_manifest(tmp_path / "junk.tar")
    assert read_manifest(tmp_path / "ok.tar")["source"] == "FaissSqliteStore"
