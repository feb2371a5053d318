"""Move a gallery between stores without re-embedding: ``sona gallery export`` / ``import``.

A site moves from the embedded FAISS store to Milvus (or back, or between two Milvus
deployments) by exporting a gallery to one file and importing it into the other store. The
vectors travel as they are, so no crop goes through the network again.

The archive is one uncompressed tar (crops are already compressed images), with members in
this order, so that an import reads it once, front to back, holding only metadata in memory::

    manifest.json           format, version, gallery, dim, count, source store, sha256 of the
                            next two members
    items.jsonl             one JSON object per item, in the source's insertion order: item_id,
                            camera_id, timestamp, identity, track_id, image_type, created_at,
                            source, frame, box (provenance; null when none; absent in
                            archives made before it), crop (the member name), crop_sha256
    embeddings.npy          float32 [count, dim]; row i belongs to line i
    crops/<item_id>.<ext>   one per item, in the order of items.jsonl

Item ids and acknowledgement times are kept (``GalleryStore.restore``); an import run again
skips the items already there. A store may take several batches at once
(``GalleryStore.import_workers``); exact ties between items of different batches may then
come back in another order than the source's. The import ends with ``GalleryStore.seal``,
so that searches right after it run at the index's full recall.

Consistency: export reads each crop twice (its checksum goes into items.jsonl before the crops
follow) and fails if an item changes or vanishes in between; for the FAISS store the service
must be stopped anyway (it holds the data directory's lock), for Milvus an export of a gallery
that is being written to may need a second try.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from client.media import suffix_for

from .store import GalleryStore, Item, NewItem, StoreError
from .store.base import check_gallery

__all__ = [
    "FORMAT",
    "VERSION",
    "ExportResult",
    "ImportResult",
    "export_gallery",
    "import_gallery",
    "read_manifest",
]

FORMAT = "sona-gallery"
VERSION = 1
_BATCH = 256
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    gallery: str
    count: int
    dim: int
    path: Path


@dataclass(frozen=True)
class ImportResult:
    gallery: str
    added: int
    skipped: int  # already in the target gallery (an import run again)
    sealed: bool = True  # False: the store was still indexing when the import returned


# --------------------------------------------------------------------------------------------
# export


def _crop_name(item: Item) -> str:
    return f"crops/{item.item_id}{suffix_for(item.image_type)}"


def _image(store: GalleryStore, item_id: str) -> bytes:
    found = store.get_image(item_id)
    if found is None:
        raise StoreError(f"the crop of item {item_id} is missing or vanished: try again")
    return found[0]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def export_gallery(store: GalleryStore, gallery: str, path: Path | str) -> ExportResult:
    """Write ``gallery`` of ``store`` (vectors, metadata, crops) to one archive at ``path``.

    The archive appears whole or not at all (written beside it, then renamed).
    """
    check_gallery(gallery)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix=".sona-export-", dir=path.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        items_path, raw_path = tmp / "items.jsonl", tmp / "embeddings.f32"
        order: list[tuple[str, str, str]] = []  # item_id, member name, crop sha256
        with items_path.open("w", encoding="utf-8") as items_fh, raw_path.open("wb") as raw:
            for batch in store.iter_items(gallery, _BATCH):
                for item, emb in batch:
                    emb = np.asarray(emb, dtype="<f4")
                    if emb.shape != (store.dim,):
                        raise StoreError(f"item {item.item_id}: embedding shape {emb.shape}")
                    name = _crop_name(item)
                    sha = hashlib.sha256(_image(store, item.item_id)).hexdigest()
                    record = {
                        "item_id": item.item_id,
                        "camera_id": item.camera_id,
                        "timestamp": item.timestamp.isoformat(),
                        "identity": item.identity,
                        "track_id": item.track_id,
                        "image_type": item.image_type,
                        "created_at": item.created_at.isoformat(),
                        "source": item.source,
                        "frame": item.frame,
                        "box": None if item.box is None else list(item.box),
                        "crop": name,
                        "crop_sha256": sha,
                    }
                    items_fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                    raw.write(emb.tobytes())
                    order.append((item.item_id, name, sha))
        if not order:
            raise StoreError(f"gallery {gallery!r} is empty or does not exist: nothing to export")
        npy_path = tmp / "embeddings.npy"
        with npy_path.open("wb") as out, raw_path.open("rb") as raw:
            header = {"descr": "<f4", "fortran_order": False, "shape": (len(order), store.dim)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, _CHUNK)
        raw_path.unlink()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "gallery": gallery,
            "dim": store.dim,
            "count": len(order),
            "source": type(store).__name__,
            "exported_at": now.isoformat(),
            "items_sha256": _sha256_file(items_path),
            "embeddings_sha256": _sha256_file(npy_path),
        }
        part = tmp / "archive.tar"
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            body = json.dumps(manifest, indent=2).encode() + b"\n"
            _add_bytes(tar, "manifest.json", body, now.timestamp())
            tar.add(items_path, "items.jsonl", recursive=False)
            tar.add(npy_path, "embeddings.npy", recursive=False)
            for item_id, name, sha in order:
                data = _image(store, item_id)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise StoreError(f"the crop of item {item_id} changed during the export")
                _add_bytes(tar, name, data, now.timestamp())
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(part, path)
    return ExportResult(gallery=gallery, count=len(order), dim=store.dim, path=path)


# --------------------------------------------------------------------------------------------
# import


def _next(tar: tarfile.TarFile, expected: str | None = None) -> tarfile.TarInfo:
    member = tar.next()
    tar.members = []  # streaming: keep no index of what was read (millions of crops)
    if member is None:
        raise StoreError("the archive ends early: incomplete or not a gallery export")
    if not member.isfile() or (expected is not None and member.name != expected):
        want = expected or "a file"
        raise StoreError(f"unexpected archive member {member.name!r} (expected {want})")
    return member


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise StoreError(f"cannot read archive member {member.name!r}")
    return fh.read()


def _check_manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError("not a SONA gallery export (manifest.json has another format)")
    if manifest.get("version") != VERSION:
        raise StoreError(f"gallery export version {manifest.get('version')!r} is not supported")
    for key in ("dim", "count"):
        if not isinstance(manifest.get(key), int) or manifest[key] < 1:
            raise StoreError(f"manifest.json: bad {key}")
    check_gallery(manifest.get("gallery"))
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The archive's manifest (its first member): gallery, dim, count, source."""
    try:
        with tarfile.open(path, "r|") as tar:
            member = _next(tar, "manifest.json")
            return _check_manifest(json.loads(_read(tar, member)))
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: not a readable gallery export ({e})") from e


def _parse_item(line: str, n: int) -> dict[str, Any]:
    try:
        rec = json.loads(line)
        ts = datetime.fromisoformat(rec["timestamp"])
        created = datetime.fromisoformat(rec["created_at"])
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"items.jsonl line {n + 1}: {e}") from e
    if not isinstance(rec.get("item_id"), str) or not isinstance(rec.get("crop"), str):
        raise StoreError(f"items.jsonl line {n + 1}: item_id and crop must be strings")
    rec["timestamp"], rec["created_at"] = ts, created
    return rec


def import_gallery(
    store: GalleryStore, path: Path | str, gallery: str | None = None
) -> ImportResult:
    """Load an archive made by ``export_gallery`` into ``store``, as ``gallery`` (default: the
    exported gallery's name). Checksums are verified as the archive streams by; each batch is
    added all or none, so a failed import can simply be run again (into a store that keeps ids).
    """
    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            tar = stack.enter_context(tarfile.open(path, "r|"))
        except (tarfile.TarError, OSError) as e:
            raise StoreError(f"{path}: not a readable gallery export ({e})") from e
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".sona-import-"))
        try:
            manifest = _check_manifest(json.loads(_read(tar, _next(tar, "manifest.json"))))
            if manifest["dim"] != store.dim:
                raise StoreError(
                    f"the archive holds {manifest['dim']}-d embeddings and the store "
                    f"{store.dim}-d: made by another model, so the crops need embedding again"
                )
            target = check_gallery(gallery if gallery is not None else manifest["gallery"])
            data = _read(tar, _next(tar, "items.jsonl"))
            if hashlib.sha256(data).hexdigest() != manifest.get("items_sha256"):
                raise StoreError("items.jsonl does not match its checksum")
            lines = data.decode("utf-8").splitlines()
            records = [_parse_item(line, n) for n, line in enumerate(lines)]
            if len(records) != manifest["count"]:
                raise StoreError(f"items.jsonl has {len(records)} items, not {manifest['count']}")
            emb_path = Path(tmp) / "embeddings.npy"
            member = _next(tar, "embeddings.npy")
            src = tar.extractfile(member)
            digest = hashlib.sha256()
            with emb_path.open("wb") as out:
                while src is not None and (block := src.read(_CHUNK)):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != manifest.get("embeddings_sha256"):
                raise StoreError("embeddings.npy does not match its checksum")
            x = np.load(emb_path, mmap_mode="r", allow_pickle=False)
            if x.dtype != np.float32 or x.shape != (len(records), manifest["dim"]):
                raise StoreError(f"embeddings.npy has {x.dtype} {x.shape}: not as listed")
            return _load(store, tar, target, records, x)
        except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            raise StoreError(f"{path}: broken gallery export ({e})") from e


def _load(
    store: GalleryStore,
    tar: tarfile.TarFile,
    gallery: str,
    records: list[dict[str, Any]],
    x: np.ndarray,
) -> ImportResult:
    """Stream the crops into batches of ``store.import_batch`` items, ``store.import_workers``
    of them written at once (a server takes several inserts in parallel, and crop fsyncs
    overlap the next batch's reading). Each batch is all or none, so whatever a kill leaves
    done is skipped when the import runs again. Then ``store.seal()``, once."""
    added = skipped = 0
    size, workers = max(1, store.import_batch), max(1, store.import_workers)
    batch: list[tuple[dict[str, Any], NewItem]] = []
    pending: deque[Future[tuple[int, int]]] = deque()

    def write(part: list[tuple[dict[str, Any], NewItem]]) -> tuple[int, int]:
        done = store.restore(
            gallery,
            [new for _, new in part],
            [rec["item_id"] for rec, _ in part],
            [rec["created_at"] for rec, _ in part],
        )
        return len(done), len(part) - len(done)

    def collect(future: Future[tuple[int, int]]) -> None:
        nonlocal added, skipped
        a, s = future.result()
        added += a
        skipped += s

    with ThreadPoolExecutor(workers, thread_name_prefix="import") as pool:
        try:
            for n, rec in enumerate(records):
                image = _read(tar, _next(tar, rec["crop"]))
                if hashlib.sha256(image).hexdigest() != rec.get("crop_sha256"):
                    raise StoreError(f"{rec['crop']} does not match its checksum")
                batch.append((rec, _new_item(rec, x[n], image)))
                if len(batch) >= size:
                    if len(pending) >= workers:  # bounded: at most workers + 1 batches held
                        collect(pending.popleft())
                    pending.append(pool.submit(write, batch))
                    batch = []
            if batch:
                pending.append(pool.submit(write, batch))
            while pending:
                collect(pending.popleft())
        finally:
            for future in pending:  # a failure: let the batches in flight end, raise the first
                future.cancel()
            wait(pending)
    with contextlib.suppress(tarfile.TarError):
        if tar.next() is not None:
            raise StoreError("the archive holds more members than its items")
    sealed = store.seal()
    return ImportResult(gallery=gallery, added=added, skipped=skipped, sealed=sealed)


def _new_item(rec: dict[str, Any], embedding: np.ndarray, image: bytes) -> NewItem:
    box = rec.get("box")
    return NewItem(
        embedding=np.array(embedding, dtype=np.float32),
        camera_id=rec.get("camera_id"),
        timestamp=rec["timestamp"],
        image=image,
        image_type=rec.get("image_type"),
        identity=rec.get("identity"),
        track_id=rec.get("track_id"),
        source=rec.get("source"),
        frame=rec.get("frame"),
        box=tuple(box) if isinstance(box, list) else box,
    )
