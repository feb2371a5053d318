"""The embedded gallery store: SQLite is the source of truth, FAISS an index over it.

Layout under ``data_dir``::

    gallery.sqlite3               items and per-gallery generations (``catalog.py``)
    crops/<gallery>/<xx>/<id>.<ext>  the uploaded crop bytes (``crops.py``)
    index/<gallery>.faiss, .json  index snapshots (``snapshots.py``)
    LOCK                          flock'ed while a store has the directory open

This module only orchestrates: locks, the order of durable steps, and when an index is
trained or rebuilt. Index kinds are in ``spec.py`` and ``index.py``, search strategies in
``search.py``.

Durability: ``add`` writes and fsyncs every crop first, then inserts all rows and bumps the
gallery's generation in one SQLite transaction, then adds the vectors to FAISS. A crash before
the commit leaves at most orphan crop files, which opening the store removes; a crash after it
loses only the in-memory index, which opening the store rebuilds from SQLite unless a snapshot
of exactly the committed generation exists. So after any crash the index holds exactly the rows
SQLite holds.

Thread safety: writers (add, delete, snapshot, close) are serialised by one mutex. Crops are
written holding only that mutex; the SQLite commit and the FAISS mutation happen under the
exclusive side of a readers-writer lock, and every read holds its shared side for its whole
duration, so a search sees SQLite and the index in the same state, and searches run in parallel
(FAISS releases the GIL). Training and rebuilds build the new index while searches continue on
the old one and swap it in under the exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..base import (
    CropMissingError,
    GalleryStore,
    GroupBy,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    Selection,
    StoreError,
    StoreFullError,
    StoreLockedError,
    TrackSummary,
    UnknownGalleryError,
)
from ..crops import LocalCropStore, crop_key
from ..durable import is_full, mkdirs_durable
from ..ranking import Candidate, top_k
from . import search, snapshots
from .catalog import Catalog
from .index import GalleryIndex
from .spec import AUTO, IndexSpec

__all__ = ["FaissSqliteStore"]

log = logging.getLogger(__name__)

_CROPS = "crops"


class _RWLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation).

    Not re-entrant: a holder must not acquire it again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class FaissSqliteStore(GalleryStore):
    """Galleries in SQLite (the truth) with a FAISS index per gallery; see the module doc.

    ``index``: ``"auto"`` or a FAISS factory string (``spec.py``). ``snapshot``: write index
    snapshots on ``close()`` and use them on open when their generation matches SQLite's; with
    ``False`` every open rebuilds from SQLite. ``train_size``, ``nprobe`` and ``ef_search`` tune
    trainable, IVF and HNSW kinds. ``search_threads``: OpenMP threads one search may use (set
    for the calling thread only, then restored); 1 by default because the service runs
    searches concurrently from a thread pool, where OpenMP's fork and spin cost more than they
    gain for one query (bench/RESULTS.md); ``None`` leaves FAISS's setting. ``index_origin``
    says per gallery whether its index came from a ``"snapshot"``, was ``"rebuilt"`` from
    SQLite on open, or is ``"new"``.
    """

    def __init__(
        self,
        data_dir: Path,
        dim: int = 1536,
        index: str = AUTO,
        *,
        snapshot: bool = True,
        train_size: int | None = None,
        nprobe: int | None = None,
        ef_search: int = 64,
        search_threads: int | None = 1,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise StoreError(f"dim must be a positive integer, not {dim!r}")
        self.dim = dim
        self.index_spec = index
        self.data_dir = Path(data_dir)
        self.spec = IndexSpec.parse(index, dim, train_size, nprobe, ef_search)
        self._use_snapshots = snapshot
        if search_threads is not None and search_threads < 1:
            raise StoreError("search_threads must be >= 1 or None")
        self._search_threads = search_threads
        self._wlock = threading.Lock()  # serialises writers
        self._rw = _RWLock()  # shared: reads; exclusive: SQLite commits + index mutation
        self._indexes: dict[str, GalleryIndex] = {}
        self._closed = True
        self.index_origin: dict[str, str] = {}

        self._index_dir = self.data_dir / "index"
        try:
            for d in (self.data_dir, self.data_dir / _CROPS, self._index_dir):
                mkdirs_durable(d)
        except OSError as e:
            raise (StoreFullError if is_full(e) else StoreError)(f"data dir: {e}") from e
        self._lock_fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLockedError(f"{self.data_dir} is open in another store") from None
        self.crops = LocalCropStore(self.data_dir / _CROPS)
        self.catalog: Catalog | None = None
        try:
            self.catalog = Catalog(self.data_dir / "gallery.sqlite3", dim)
            self._closed = False
            self._remove_orphans()
            snapshots.remove_partial(self._index_dir)
            self._open_indexes()
        except BaseException:
            self._closed = True
            if self.catalog is not None:
                self.catalog.close()
            self.crops.close()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            raise

    # ---------------------------------------------------------------- opening

    def _check_open(self) -> Catalog:
        if self._closed or self.catalog is None:
            raise StoreError("the store is closed")
        return self.catalog

    def _remove_orphans(self) -> None:
        """Delete crop files no row references: leftovers of batches that never committed."""
        referenced = self._check_open().image_paths()
        removed = 0
        for key, _mtime in list(self.crops.entries()):
            if f"{_CROPS}/{key}" not in referenced:
                self.crops.delete(key)
                removed += 1
        if removed:
            log.info("removed %d orphan crop files", removed)

    def _open_indexes(self) -> None:
        catalog = self._check_open()
        for gallery, generation in catalog.galleries():
            gi = None
            if self._use_snapshots:
                truth = catalog.rowids(catalog.writer, gallery)
                gi = snapshots.load_snapshot(self._index_dir, gallery, generation, self.spec, truth)
            if gi is None:
                gi = self._build(gallery, generation)
                self.index_origin[gallery] = "rebuilt"
            else:
                self.index_origin[gallery] = "snapshot"
            self._indexes[gallery] = gi
            self._maybe_retrain(gallery)

    def _build(self, gallery: str, generation: int) -> GalleryIndex:
        """A fresh index of the gallery from SQLite (rowid order). Holds no lock itself."""
        catalog = self._check_open()
        conn = catalog.writer
        spec = self.spec
        if spec.needs_training and catalog.size(conn, gallery) >= spec.train_size:
            ids = catalog.rowids(conn, gallery)
            cap = max(spec.train_size, 50_000)
            if len(ids) > cap:
                ids = np.sort(np.random.default_rng(0).choice(ids, cap, replace=False))
            _, sample = catalog.embeddings_of(conn, ids)
            gi = GalleryIndex.trained(spec, generation, sample)
        else:
            gi = GalleryIndex.empty(spec, generation)
        for ids, x in catalog.iter_embeddings(conn, gallery):
            gi.add(ids, x)
        return gi

    def _maybe_retrain(self, gallery: str) -> None:
        """Switch to the trained kind, or compact tombstones, when due. Caller holds _wlock.

        The new index is built while searches go on with the old one (writers are held back by
        _wlock, so nothing changes meanwhile) and swapped in under the exclusive lock.
        """
        gi = self._indexes[gallery]
        training = gi.due_training
        if not (training or gi.due_compaction):
            return
        what = "training" if training else "compacting"
        log.info(
            "gallery %s: %s the %s index over %d items", gallery, what, gi.spec.factory, gi.live
        )
        try:
            new = self._build(gallery, gi.generation)
        except Exception:  # the current index is still correct, only slower or larger
            log.exception("gallery %s: index rebuild failed; keeping the current one", gallery)
            return
        with self._rw.write():
            self._indexes[gallery] = new

    # ---------------------------------------------------------------- writes

    def _galleries_of(self, item_ids: list[str]) -> dict[str, str]:
        with self._wlock:
            return self._check_open().galleries_of(item_ids)

    def _write(
        self,
        gallery: str,
        items: list[NewItem],
        x: np.ndarray,
        ids: list[str],
        created: list[datetime],
    ) -> list[Item]:
        """Crops, then rows, then the index (see the module doc)."""
        with self._wlock:
            catalog = self._check_open()
            keys = [crop_key(gallery, i, it.image_type) for i, it in zip(ids, items, strict=True)]
            self.crops.put_many(keys, [bytes(it.image) for it in items])
            with self._rw.write():
                try:
                    paths = [f"{_CROPS}/{k}" for k in keys]
                    rowids = catalog.insert(gallery, items, x, ids, paths, created)
                except BaseException:
                    for key in keys:
                        self.crops.delete(key)
                    raise
                gi = self._indexes.get(gallery)
                if gi is None:
                    gi = self._indexes[gallery] = GalleryIndex.empty(self.spec, 0)
                    self.index_origin[gallery] = "new"
                gi.generation += 1
                try:
                    gi.add(rowids, x)
                except Exception:  # committed, so rebuild rather than disagree with SQLite
                    log.exception("index add failed for gallery %s: rebuilding", gallery)
                    self._indexes[gallery] = self._build(gallery, gi.generation)
            self._maybe_retrain(gallery)
            return [it.stored(i, gallery, c) for i, it, c in zip(ids, items, created, strict=True)]

    def _delete(self, item_id: str) -> bool:
        with self._wlock:
            catalog = self._check_open()
            found = catalog.locate(item_id)
            if found is None:
                return False
            rowid, gallery, path = found
            with self._rw.write():
                catalog.remove(rowid, gallery)
                gi = self._indexes[gallery]
                gi.generation += 1
                try:
                    gi.remove(int(rowid))
                except Exception:
                    log.exception("index remove failed for gallery %s: rebuilding", gallery)
                    self._indexes[gallery] = self._build(gallery, gi.generation)
            # if lost in a crash: an orphan, removed on open
            self.crops.delete(path.removeprefix(f"{_CROPS}/"))
            self._maybe_retrain(gallery)
        return True

    def _remove_batch(self, sel: Selection, limit: int) -> int:
        """Rows (one transaction), then the index, then the crops: a kill between the commit
        and the crops leaves orphan crops, which opening the store removes."""
        with self._wlock:
            catalog = self._check_open()
            with self._rw.write():
                rows = catalog.remove_batch(sel, limit)
                by_gallery: dict[str, list[int]] = {}
                for rowid, gallery, _ in rows:
                    by_gallery.setdefault(gallery, []).append(int(rowid))
                for gallery, rowids in by_gallery.items():
                    gi = self._indexes[gallery]
                    gi.generation += 1
                    try:
                        gi.remove_many(np.array(rowids, dtype=np.int64))
                    except Exception:
                        log.exception("index remove failed for gallery %s: rebuilding", gallery)
                        self._indexes[gallery] = self._build(gallery, gi.generation)
            for _, _, path in rows:
                self.crops.delete(path.removeprefix(f"{_CROPS}/"))
            for gallery in by_gallery:
                self._maybe_retrain(gallery)
        return len(rows)

    # ---------------------------------------------------------------- snapshots and closing

    def snapshot(self) -> None:
        """Write the index of every gallery changed since its last snapshot (atomically)."""
        with self._wlock:
            self._check_open()
            try:
                self._snapshot_all()
            except OSError as e:
                raise (StoreFullError if is_full(e) else StoreError)(f"snapshot: {e}") from e
            except RuntimeError as e:  # FAISS reports its I/O errors as RuntimeError
                raise (StoreFullError if is_full(e) else StoreError)(f"snapshot: {e}") from e

    def _snapshot_all(self) -> None:
        for gallery, gi in list(self._indexes.items()):
            if gi.snapshot_generation != gi.generation:
                snapshots.write_snapshot(self._index_dir, gallery, gi)

    def close(self) -> None:
        """Snapshot (when enabled), close connections and release the directory; idempotent."""
        with self._wlock:
            if self._closed:
                return
            with self._rw.write():
                if self._use_snapshots:
                    try:
                        self._snapshot_all()
                    except (OSError, RuntimeError) as e:  # SQLite stays the truth
                        log.warning("index snapshot failed (the next open rebuilds): %s", e)
                self._closed = True
                if self.catalog is not None:
                    self.catalog.checkpoint()
                    self.catalog.close()
                self._indexes.clear()
            self.crops.close()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    # ---------------------------------------------------------------- reads

    def _get(self, item_id: str) -> Item | None:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.item(conn, item_id)

    def _get_embedding(self, item_id: str) -> np.ndarray | None:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.embedding(conn, item_id)

    def _get_with_embedding(self, item_id: str) -> tuple[Item, np.ndarray] | None:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.item_with_embedding(conn, item_id)

    def _get_image(self, item_id: str) -> tuple[bytes, str] | None:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                row = catalog.image_of(conn, item_id)
            if row is None:
                return None
            data = self.crops.get(row[0].removeprefix(f"{_CROPS}/"))
        if data is None:
            log.error("item %s: its crop %s is missing from %s", item_id, row[0], self.data_dir)
            raise CropMissingError(f"the crop of item {item_id} is missing on the server")
        return data, row[1]

    def counts(self) -> dict[str, dict[str, int]]:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.counts(conn)

    def _galleries(self) -> list[str]:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.gallery_names(conn)

    def _gallery_counts(self, gallery: str) -> dict[str, int]:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.gallery_counts(conn, gallery)

    def _track_summaries(self, gallery: str, camera_id: str | None) -> list[TrackSummary]:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.track_summaries(conn, gallery, camera_id)

    def _count(self, gallery: str | None) -> int:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.count(conn, gallery)

    def _track(self, gallery: str, track_id: str, limit: int) -> list[tuple[Item, np.ndarray]]:
        with self._rw.read():
            catalog = self._check_open()
            with catalog.reader() as conn:
                return catalog.track(conn, gallery, track_id, limit)

    def _iter_items(self, gallery: str, batch: int) -> Iterator[list[tuple[Item, np.ndarray]]]:
        after = 0
        while True:
            with self._rw.read():
                catalog = self._check_open()
                with catalog.reader() as conn:
                    rows = catalog.page(conn, gallery, after, batch)
            if not rows:
                return
            after = rows[-1][0]
            yield [(item, emb) for _, item, emb in rows]

    def index_info(self) -> dict[str, dict[str, Any]]:
        """Per gallery: index kind, vectors held, tombstones, generation, snapshot state."""
        spec = self.spec
        with self._rw.read():
            self._check_open()
            return {
                g: {
                    "index": spec.name,
                    "factory": spec.factory,
                    "train_size": spec.train_size if spec.needs_training else None,
                    "exact": not gi.switched,
                    "candidates": None if gi.ann is None else int(gi.ann.ntotal),
                    "ntotal": int(gi.index.ntotal),
                    "live": gi.live,
                    "tombstones": len(gi.deleted),
                    "generation": gi.generation,
                    "snapshot_generation": gi.snapshot_generation,
                    "origin": self.index_origin.get(g),
                }
                for g, gi in self._indexes.items()
            }

    def index_ids(self, gallery: str) -> np.ndarray:
        """The rowids the gallery's index returns (sorted): for consistency checks."""
        with self._rw.read():
            self._check_open()
            gi = self._indexes.get(gallery)
            return np.zeros(0, np.int64) if gi is None else gi.ids()

    # ---------------------------------------------------------------- search

    def _search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
    ) -> list[Hit]:
        q = query.reshape(1, self.dim)
        threads = faiss.omp_get_max_threads()
        if self._search_threads is not None:
            faiss.omp_set_num_threads(self._search_threads)  # this thread only (OpenMP ICV)
        try:
            with self._rw.read():
                catalog = self._check_open()
                gi = self._indexes.get(gallery)
                if gi is None or gi.live == 0:
                    raise UnknownGalleryError(
                        f"gallery {gallery!r} does not exist (it has no items)"
                    )
                with catalog.reader() as conn:
                    flt = catalog.resolve(conn, gallery, where, gi.deleted, int(gi.index.ntotal))
                    if flt.n_avail == 0:
                        return []
                    labels: dict[int, str | None] = {}

                    def fetch(window: int) -> tuple[list[Candidate], bool]:
                        wanted = min(flt.n_avail, window)
                        scores, ids = search.ranked(catalog, conn, gi, q, wanted, flt)
                        if group_by is not None:
                            catalog.labels(conn, ids, group_by, labels)
                        ranked = [
                            Candidate(s, i, labels.get(i))
                            for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
                        ]
                        return ranked, wanted >= flt.n_avail or len(ids) < wanted

                    chosen = top_k(fetch, k, group_by is not None)
                    items = catalog.items_of(conn, [int(c.key) for c in chosen])
        finally:
            if self._search_threads is not None:
                faiss.omp_set_num_threads(threads)
        return [Hit(item=items[c.key], score=c.score) for c in chosen if c.key in items]
