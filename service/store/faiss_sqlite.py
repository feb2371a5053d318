"""The embedded gallery store: SQLite is the source of truth, FAISS an index over it.

Layout under ``data_dir``::

    gallery.sqlite3               items and per-gallery generations (WAL, synchronous=FULL)
    crops/<gallery>/<xx>/<id>.<ext>  the uploaded crop bytes (xx: first two hex digits of the id)
    index/<gallery>.faiss         index snapshot, with index/<gallery>.json (its generation)
    index/<gallery>.ann.faiss     "auto" past its threshold: the candidate index's snapshot
    LOCK                          flock'ed while a store has the directory open

Durability: ``add`` writes and fsyncs every crop file (and its directory) first, then inserts
all rows and bumps the gallery's generation in one SQLite transaction, then adds the vectors to
FAISS. A crash before the commit leaves at most orphan crop files, which opening the store
removes; a crash after it loses only the in-memory index, which opening the store rebuilds from
SQLite unless a snapshot of exactly the committed generation exists. So after any crash the
index holds exactly the rows SQLite holds.

Index kinds (``index`` is ``"auto"`` or a FAISS factory string, inner-product metric, SQLite
rowids as ids):

* ``"Flat"``: exact search. Filters go to FAISS as an ``IDSelector`` over the rowids SQLite
  allows (a hash set, or a bitmap when dense), so a filtered search is exactly the top k of the
  allowed items. A filter that only excludes (cameras, the query item) is passed the other way
  round, as ``IDSelectorNot`` over the few rowids it excludes.
* ``"auto"`` (default): ``"Flat"`` until the gallery holds ``train_size`` items (default
  ``AUTO_THRESHOLD``); then, through the same training step as the kinds below, it also gets a
  candidate index, ``IVF<nlist>,PQ<dim/4>x4fs`` (``auto_factory``: 4-bit PQ fast scan, dim/8
  bytes a vector), and keeps its flat index. Searches without a filter, or with exclusions only
  (``exclude_cameras``, ``exclude_item``), take ``AUTO_CANDIDATES`` candidates from
  ``AUTO_NPROBE`` lists of the candidate index and re-score them exactly with the flat index's
  vectors: approximate (widened, then exact, if an exclusion leaves it too few); recall@10 at
  1M in bench/search.py 0.96 on its low-rank set, 0.65 on its structureless worst case.
  Searches with cameras or a time window go to the flat index with the selector as under
  ``"Flat"``: exact, costing what they cost there. Memory: the flat index plus dim/8 + 8 bytes
  a vector.
* Kinds that need training (``"IVF1024,Flat"``, ``"IVF1024,PQ64"``, ``"PQ64"``, ...): the
  gallery is searched exactly with a flat index until it holds ``train_size`` vectors (default
  ``max(10_000, 40 * nlist)``); then the index is trained on the stored vectors (a sample of at
  most ``max(train_size, 50_000)``) and replaces the flat one. It is not retrained later.
  IVF indexes keep the rowids themselves (``add_with_ids``) because ``IndexIDMap2`` around an
  IVF index mis-maps ids after ``remove_ids``; other kinds are wrapped in ``IndexIDMap2``.
  ``"IVF...,Flat"`` kinds hold the float vectors: a filter on them scans every list through the
  selector, which is exact.
* ``"HNSW32"`` and other graphs without ``remove_ids``: a deleted rowid becomes a tombstone,
  excluded from every search through the selector; once tombstones reach ``COMPACT_FRACTION``
  (a quarter) of the index and at least ``COMPACT_MIN`` (64), the gallery's index is rebuilt
  from SQLite.

The other approximate kinds answer a filter that leaves at most ``EXACT_LIMIT`` items by exact
search over those items' stored embeddings (larger filters are approximate), widen (nprobe,
efSearch) and finally fall back to exact search whenever the index returns fewer results than
exist (a selective filter starving a graph walk or an IVF probe); they fetch ``REFINE`` x k
candidates (at least k + 32) and re-score them with the stored float32 embeddings (or take the
scores of kinds holding float vectors), so ``Hit.score`` is always the cosine.

Ranking: best score first, equal scores by rowid (insertion order). The store asks FAISS for
k + 1 candidates (grouping: max(4k, 32)) and widens (x2; grouping x4) until the k-th pick scores
strictly above the last candidate, or every allowed item was ranked: so the cut never splits a
tie arbitrarily, and ``group_by`` (the best item per identity or track; an item without the
label is a group of its own) returns k groups unless the gallery runs out.

Costs worth knowing: deleting from a flat index compacts its vectors, O(n) (about 30 ms at
100k x 1536) under the exclusive lock; training or compaction rebuilds hold the writer mutex
(writes wait, searches do not): for ``"auto"`` once per gallery, when it reaches the threshold
(seconds to tens of seconds on 2 cores), and on an open without a usable snapshot (reading the
gallery from SQLite, training on a sample of at most ``max(train_size, 50_000)``). The candidate
index is not retrained as the gallery grows; reopening without its snapshot retrains it.

Thread safety: writers (add, delete, snapshot, close) are serialised by one mutex. Crop files
are written holding only that mutex; the SQLite commit and the FAISS mutation happen under the
exclusive side of a readers-writer lock, and every read (search, get, counts) holds its shared
side for its whole duration. A search therefore sees SQLite and the index in the same state,
and searches run in parallel (FAISS releases the GIL). Training and rebuilds build the new index
while searches continue on the old one and swap it in under the exclusive lock. The writer has
its own SQLite connection; readers borrow connections from a small pool.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import (
    GALLERY_NAME,
    GalleryStore,
    GroupBy,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    StoreError,
    StoreFullError,
    check_search_args,
)

__all__ = [
    "AUTO",
    "AUTO_CANDIDATES",
    "AUTO_NLIST",
    "AUTO_NPROBE",
    "AUTO_THRESHOLD",
    "EXACT_LIMIT",
    "REFINE",
    "FaissSqliteStore",
]

log = logging.getLogger(__name__)

#: index="auto" (the default): a gallery is searched exactly (its flat index) until it holds
#: AUTO_THRESHOLD items (``train_size``); from then on it also has a candidate index,
#: ``IVF<nlist>,PQ<dim/4>x4fs`` (4-bit PQ fast scan, dim/8 bytes a vector), which proposes
#: AUTO_CANDIDATES items from AUTO_NPROBE of its lists for the flat index to re-score exactly.
#: nlist is AUTO_NLIST or less, so that k-means has at least 39 vectors per list (FAISS's
#: minimum) at the threshold. bench/search.py measured these (bench/RESULTS.md).
AUTO = "auto"
AUTO_THRESHOLD = 20_000
AUTO_NLIST = 512
AUTO_NPROBE = 128
AUTO_CANDIDATES = 100


def auto_factory(threshold: int, dim: int) -> str:
    """The candidate index ``auto`` adds once a gallery holds ``threshold`` items."""
    nlist = 1
    while nlist < AUTO_NLIST and 39 * 2 * nlist <= threshold:
        nlist *= 2
    codes = f"PQ{dim // 4}x4fs" if dim % 8 == 0 else "SQ8"  # fast scan wants an even M
    return f"IVF{nlist},{codes}"


#: Approximate indexes search filters that leave at most this many items exactly.
EXACT_LIMIT = 4096
#: Approximate indexes fetch this many times k candidates and re-rank them exactly.
REFINE = 2
#: Indexes without remove_ids are rebuilt once tombstones reach this share (and COMPACT_MIN).
COMPACT_FRACTION = 0.25
COMPACT_MIN = 64

_SCHEMA_VERSION = 1
_CHUNK = 4096  # rows per SQLite round trip when streaming embeddings
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_LABEL_COLUMNS = {"identity": "identity", "track": "track_id"}  # fixed names, never user text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    gallery    TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    rowid      INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id    TEXT NOT NULL UNIQUE,
    gallery    TEXT NOT NULL REFERENCES meta(gallery),
    camera_id  TEXT NOT NULL,
    ts         REAL NOT NULL,
    timestamp  TEXT NOT NULL,
    identity   TEXT,
    track_id   TEXT,
    image_type TEXT NOT NULL,
    image_path TEXT NOT NULL,
    embedding  BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_gallery_camera ON items (gallery, camera_id);
CREATE INDEX IF NOT EXISTS items_gallery_ts ON items (gallery, ts);
"""

_ITEM_COLUMNS = (
    "rowid, item_id, gallery, camera_id, timestamp, image_type, created_at, identity, track_id"
)


# --------------------------------------------------------------------------------------------
# small helpers


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "full" in str(exc).lower()
        )
    return False


def _check_vector(value: object, dim: int, what: str) -> np.ndarray:
    """A finite float32 vector of ``dim`` values, or a ``StoreError`` naming ``what``."""
    try:
        v = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} is not a numeric vector") from e
    if v.shape != (dim,):
        raise StoreError(f"{what} has shape {v.shape}, expected ({dim},)")
    if not np.isfinite(v).all():
        raise StoreError(f"{what} has non-finite values")
    return v


def _check_item(it: NewItem, dim: int, what: str) -> np.ndarray:
    """What every backend requires of a new item; returns its embedding."""
    vector = _check_vector(getattr(it, "embedding", None), dim, f"{what} embedding")
    _aware(getattr(it, "timestamp", None), f"{what} timestamp")
    if not isinstance(it.camera_id, str) or not it.camera_id:
        raise StoreError(f"{what}: camera_id must be a non-empty string")
    for name in ("identity", "track_id"):
        value = getattr(it, name)
        if value is not None and not isinstance(value, str):
            raise StoreError(f"{what}: {name} must be a string or None")
    if not isinstance(it.image, bytes | bytearray | memoryview) or not len(it.image):
        raise StoreError(f"{what}: image must be non-empty bytes")
    if not isinstance(it.image_type, str) or not _MEDIA_TYPE.fullmatch(it.image_type):
        raise StoreError(f"{what}: bad media type {it.image_type!r}")
    return vector


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(path: Path) -> set[Path]:
    """Create ``path`` and missing parents; return the directories that gained an entry."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    changed: set[Path] = set()
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        changed.add(d.parent)
    return changed


def _mkdirs_durable(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that gained an entry."""
    for d in sorted(_mkdirs(path)):
        _fsync_dir(d)


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (the caller fsyncs the directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via ``path.tmp`` + fsync + rename + directory fsync, so readers see old or new."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise StoreError(f"{what} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError(f"{what} must be timezone-aware")
    return value


def _check_gallery(gallery: object) -> str:
    if not isinstance(gallery, str) or GALLERY_NAME.fullmatch(gallery) is None:
        raise StoreError(f"bad gallery name {gallery!r}: use [A-Za-z0-9_-]{{1,64}}")
    return gallery


def _no_polysemous(index: Any) -> None:
    """Switch off PQ polysemous training (on by default in FAISS).

    It only serves Hamming pre-filtering, which the store never enables, and makes training
    10-30x slower.
    """
    for _ in range(4):
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False
        sub = getattr(index, "index", None) or getattr(index, "storage", None)
        if sub is None:
            return
        index = faiss.downcast_index(sub)  # borrowed: the parent keeps owning it


def _ivf_ids(index: Any) -> np.ndarray:
    """Every id in an IVF index's lists, sorted."""
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [np.zeros(0, np.int64)]
    for no in range(ivf.nlist):
        n = lists.list_size(no)
        if n:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(no), n).copy())
    return np.sort(np.concatenate(parts).astype(np.int64))


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _sorted_hits(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best first; equal scores by ascending rowid, so results are deterministic."""
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


def _json_ids(ids: Sequence[int] | np.ndarray) -> str:
    return json.dumps([int(i) for i in ids])


# --------------------------------------------------------------------------------------------
# readers-writer lock


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


# --------------------------------------------------------------------------------------------
# the per-gallery index


@dataclass(frozen=True)
class _Spec:
    """What the factory string implies, worked out once per store."""

    name: str  # what was asked for: "auto" or the factory string
    factory: str  # the FAISS factory string of the target index ("auto": auto_factory)
    dim: int
    exact: bool  # "Flat": the target index is the exact flat index
    needs_training: bool
    native_ids: bool  # IVF: add_with_ids/remove_ids on the index itself
    removable: bool  # False: deletions become tombstones
    params: str  # "ivf", "hnsw" or "generic"
    flat_codes: bool  # IVF,Flat or HNSW,Flat: the index holds the float vectors (exact scores)
    ivf_flat: bool  # IVF,Flat: scanning every list under a selector is an exact search
    keep_flat: bool  # auto: the trained index is added beside the flat one, not instead of it
    candidates: int  # auto: how many candidates the trained index proposes
    nlist: int
    train_size: int
    nprobe: int
    ef_search: int

    @classmethod
    def parse(
        cls,
        index: str,
        dim: int,
        train_size: int | None,
        nprobe: int | None,
        ef_search: int,
    ) -> _Spec:
        if not isinstance(index, str) or not index.strip():
            raise StoreError("index must be 'auto' or a FAISS factory string such as 'Flat'")
        for what, value in (("train_size", train_size), ("nprobe", nprobe)):
            if value is not None and (not _is_int(value) or value < 1):
                raise StoreError(f"{what} must be an integer >= 1, not {value!r}")
        if not _is_int(ef_search) or ef_search < 1:
            raise StoreError(f"ef_search must be an integer >= 1, not {ef_search!r}")
        name = index.strip()
        factory = name
        keep_flat = name.lower() == AUTO
        if keep_flat:
            train_size = AUTO_THRESHOLD if train_size is None else train_size
            name, factory = AUTO, auto_factory(train_size, dim)
            nprobe = AUTO_NPROBE if nprobe is None else nprobe
        if factory.replace(" ", "").upper().startswith("IDMAP"):
            raise StoreError("index must not contain IDMap: the store assigns ids itself")
        try:
            probe = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise StoreError(
                f"bad index {factory!r}: not 'auto' and not a FAISS factory string ({e})"
            ) from e
        ivf = faiss.try_extract_index_ivf(probe)
        exact = isinstance(probe, faiss.IndexFlat)
        hnsw = isinstance(probe, faiss.IndexHNSW)
        removable = True
        if ivf is None:
            try:
                faiss.IndexIDMap2(probe).remove_ids(faiss.IDSelectorBatch(np.zeros(0, np.int64)))
            except RuntimeError:
                removable = False
        nlist = int(ivf.nlist) if ivf is not None else 0
        needs_training = not probe.is_trained
        if train_size is None:
            train_size = max(10_000, 40 * nlist)
        if needs_training and train_size < nlist:
            raise StoreError(
                f"train_size {train_size} is below nlist {nlist}: k-means needs at least one"
                " vector per list"
            )
        if nprobe is None:
            nprobe = max(8, nlist // 16)
        ivf_flat = isinstance(probe, faiss.IndexIVFFlat)
        return cls(
            name=name,
            factory=factory,
            dim=dim,
            exact=exact,
            needs_training=needs_training,
            native_ids=ivf is not None,
            removable=removable,
            params="ivf" if ivf is not None else ("hnsw" if hnsw else "generic"),
            flat_codes=ivf_flat or isinstance(probe, faiss.IndexHNSWFlat),
            ivf_flat=ivf_flat,
            keep_flat=keep_flat,
            candidates=AUTO_CANDIDATES,
            nlist=nlist,
            train_size=int(train_size),
            nprobe=min(int(nprobe), nlist) if nlist else 0,
            ef_search=int(ef_search),
        )


class _GalleryIndex:
    """One gallery's FAISS index and the bookkeeping that keeps it equal to SQLite.

    ``exact``: the index is ``IndexIDMap2(IndexFlatIP)`` (the "Flat" kind, "auto", or a trainable
    kind still waiting for enough vectors). ``ann``: "auto" past its threshold, the trained
    candidate index over the same rowids. ``deleted``: tombstoned rowids (kinds without
    remove_ids).
    """

    def __init__(self, spec: _Spec, generation: int, index: Any = None, exact: bool = True):
        self.spec = spec
        self.generation = generation
        self.snapshot_generation: int | None = None
        self.deleted: set[int] = set()
        self.no_params = False  # the index rejected SearchParameters: filter afterwards
        if index is None:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(spec.dim))
            exact = True
        self.index = index
        self.exact = exact
        self.ann: Any = None

    @classmethod
    def trained(cls, spec: _Spec, generation: int, sample: np.ndarray) -> _GalleryIndex:
        """An empty index of the target kind, trained on ``sample`` ("auto": flat + ann)."""
        base = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        _no_polysemous(base)
        base.train(sample)
        if spec.keep_flat:
            gi = cls(spec, generation)
            gi.ann = base
            return gi
        index = base if spec.native_ids else faiss.IndexIDMap2(base)
        return cls(spec, generation, index, exact=False)

    @property
    def switched(self) -> bool:
        """The gallery has its target (trained or approximate) index."""
        return self.ann is not None if self.spec.keep_flat else not self.exact

    @property
    def removable(self) -> bool:
        return self.exact or self.spec.removable

    @property
    def live(self) -> int:
        return int(self.index.ntotal) - len(self.deleted)

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, ids)
        if self.ann is not None:
            self.ann.add_with_ids(x, ids)

    def remove(self, rowid: int) -> None:
        if self.removable:
            n = self.index.remove_ids(faiss.IDSelectorBatch(np.array([rowid], np.int64)))
            if n != 1:
                raise StoreError(f"index did not hold rowid {rowid}")
        else:
            self.deleted.add(rowid)
        gone = faiss.IDSelectorBatch(np.array([rowid], np.int64))
        if self.ann is not None and self.ann.remove_ids(gone) != 1:
            raise StoreError(f"candidate index did not hold rowid {rowid}")

    def all_ids(self) -> np.ndarray:
        """Every id the FAISS index holds, tombstones included, sorted."""
        if isinstance(self.index, faiss.IndexIDMap2):
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        return _ivf_ids(self.index)

    def ann_ids(self) -> np.ndarray:
        """The ids the candidate index holds, sorted (empty without one)."""
        return np.zeros(0, np.int64) if self.ann is None else _ivf_ids(self.ann)

    def ids(self) -> np.ndarray:
        """The live ids (what SQLite must hold for this gallery), sorted."""
        ids = self.all_ids()
        if self.deleted:
            ids = ids[~np.isin(ids, np.fromiter(self.deleted, np.int64))]
        return ids

    def params(self, sel: Any, kk: int, boost: int = 1) -> Any:
        """Search parameters carrying ``sel``; ``boost`` widens approximate searches."""
        spec = self.spec
        if self.exact or spec.params == "generic":
            return faiss.SearchParameters(sel=sel) if sel is not None else None
        if spec.params == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=min(spec.nlist, spec.nprobe * boost))
        ef = max(spec.ef_search, kk) * boost
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(min(ef, 1 << 30)))

    def max_boost(self, kk: int) -> int:
        """The widening at which an approximate search has looked at everything it can."""
        spec = self.spec
        if self.exact or spec.params == "generic":
            return 1
        if spec.params == "ivf":
            return -(-spec.nlist // spec.nprobe)
        return max(1, -(-int(self.index.ntotal) // max(spec.ef_search, kk)))


# --------------------------------------------------------------------------------------------
# the store


@dataclass
class _Filter:
    """A search filter resolved against SQLite."""

    gallery: str
    allowed: np.ndarray | None  # sorted rowids that may be returned; None: all live items
    negatives: np.ndarray  # rowids never to return (tombstones, the excluded item)
    n_avail: int  # how many items can be returned


class FaissSqliteStore(GalleryStore):
    """Galleries in SQLite (the truth) with a FAISS index per gallery; see the module doc.

    ``snapshot``: write index snapshots on ``close()`` and use them on open when their
    generation matches SQLite's; with ``False`` every open rebuilds from SQLite (``snapshot()``
    still writes when called). ``train_size``, ``nprobe`` and ``ef_search`` tune trainable,
    IVF and HNSW kinds. ``search_threads``: OpenMP threads one search may use (set for the
    calling thread only, then restored); 1 by default because the service runs searches
    concurrently from a thread pool, and for a single query OpenMP's fork and spin cost more
    than they gain on a busy machine (measured 3x-8x slower with 2 threads on 2 loaded cores);
    ``None`` leaves FAISS's setting. ``index_origin`` says per gallery whether its index came from a
    ``"snapshot"``, was ``"rebuilt"`` from SQLite on open, or is ``"new"``.
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
        self._spec = _Spec.parse(index, dim, train_size, nprobe, ef_search)
        self._use_snapshots = snapshot
        if search_threads is not None and search_threads < 1:
            raise StoreError("search_threads must be >= 1 or None")
        self._search_threads = search_threads
        self._wlock = threading.Lock()  # serialises writers
        self._rw = _RWLock()  # shared: reads; exclusive: SQLite commits + index mutation
        self._pool_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._all_conns: list[sqlite3.Connection] = []
        self._indexes: dict[str, _GalleryIndex] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._closed = True
        self.index_origin: dict[str, str] = {}

        self._crops = self.data_dir / "crops"
        self._index_dir = self.data_dir / "index"
        try:
            _mkdirs_durable(self.data_dir)
            _mkdirs_durable(self._crops)
            _mkdirs_durable(self._index_dir)
        except OSError as e:
            raise (StoreFullError if _is_full(e) else StoreError)(f"data dir: {e}") from e
        self._lock_fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(f"{self.data_dir} is open in another store") from None
        try:
            self._wconn = self._connect()
            self._init_schema()
            self._closed = False
            self._remove_orphans()
            self._open_indexes()
        except BaseException:
            self._closed = True
            self._close_connections()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            raise

    # ---------------------------------------------------------------- connections and schema

    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.data_dir / "gallery.sqlite3",
            timeout=30.0,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # used by one thread at a time, guarded by the locks
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        self._all_conns.append(conn)
        return conn

    def _init_schema(self) -> None:
        c = self._wconn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise StoreError(f"unknown database schema version {version}")
        c.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES ('dim', ?)", (str(self.dim),)
            )
            c.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")  # a constant, not user data
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        stored = c.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()[0]
        if int(stored) != self.dim:
            raise StoreError(f"the store at {self.data_dir} holds {stored}-d embeddings")

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._connect(readonly=True)
        try:
            yield conn
        finally:
            with self._pool_lock:
                self._readers.append(conn)

    def _close_connections(self) -> None:
        for conn in self._all_conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._all_conns.clear()
        self._readers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # ---------------------------------------------------------------- opening

    def _remove_orphans(self) -> None:
        """Delete crop files no row references: leftovers of batches that never committed."""
        referenced = {r[0] for r in self._wconn.execute("SELECT image_path FROM items")}
        removed = 0
        for dirpath, _dirs, files in os.walk(self._crops):
            for name in files:
                path = Path(dirpath) / name
                if path.relative_to(self.data_dir).as_posix() not in referenced:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    removed += 1
        if removed:
            log.info("removed %d orphan crop files", removed)
        for tmp in self._index_dir.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _open_indexes(self) -> None:
        rows = self._wconn.execute("SELECT gallery, generation FROM meta ORDER BY gallery")
        for gallery, generation in rows.fetchall():
            gi = self._load_snapshot(gallery, generation) if self._use_snapshots else None
            if gi is None:
                gi = self._build(gallery, generation)
                self.index_origin[gallery] = "rebuilt"
            else:
                self.index_origin[gallery] = "snapshot"
            self._indexes[gallery] = gi
            self._maybe_retrain(gallery)

    def _sqlite_ids(self, conn: sqlite3.Connection, gallery: str) -> np.ndarray:
        cur = conn.execute("SELECT rowid FROM items WHERE gallery = ? ORDER BY rowid", (gallery,))
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def _load_snapshot(self, gallery: str, generation: int) -> _GalleryIndex | None:
        """The gallery's snapshot if it is exactly SQLite's current state, else None."""
        path = self._index_dir / f"{gallery}.faiss"
        side = self._index_dir / f"{gallery}.json"
        try:
            meta = json.loads(side.read_text())
            # a flat snapshot serves every kind that starts flat (Flat, auto, IVF, ...)
            flat = bool(meta.get("exact")) and (self._spec.exact or self._spec.needs_training)
            if (
                meta.get("generation") != generation
                or (meta.get("factory") != self._spec.factory and not flat)
                or meta.get("dim") != self.dim
                or meta.get("size") != path.stat().st_size
            ):
                return None
            index = faiss.read_index(str(path))
            ann = None
            if self._spec.keep_flat and meta.get("ann") == self._spec.factory:
                ann_path = self._index_dir / f"{gallery}.ann.faiss"
                if meta.get("ann_size") != ann_path.stat().st_size:
                    return None
                ann = faiss.read_index(str(ann_path))
        except (OSError, ValueError, RuntimeError) as e:
            log.info("snapshot of gallery %s unusable (%s): rebuilding", gallery, e)
            return None
        exact = bool(meta.get("exact"))
        if index.d != self.dim or (exact and not isinstance(index, faiss.IndexIDMap2)):
            return None
        gi = _GalleryIndex(self._spec, generation, index, exact=exact)
        held = gi.all_ids()
        truth = self._sqlite_ids(self._wconn, gallery)
        if ann is not None:
            if ann.d != self.dim or faiss.try_extract_index_ivf(ann) is None:
                return None
            gi.ann = ann
            if not np.array_equal(gi.ann_ids(), truth):
                return None
        if gi.removable:
            if not np.array_equal(held, truth):
                return None
        else:
            if not np.isin(truth, held).all() or len(np.unique(held)) != len(held):
                return None
            gi.deleted = set(np.setdiff1d(held, truth).tolist())
        gi.snapshot_generation = generation
        return gi

    def _iter_embeddings(
        self, conn: sqlite3.Connection, gallery: str
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The gallery's (rowids, embeddings) in rowid order, a chunk at a time."""
        cur = conn.execute(
            "SELECT rowid, embedding FROM items WHERE gallery = ? ORDER BY rowid", (gallery,)
        )
        while rows := cur.fetchmany(_CHUNK):
            yield self._unpack(rows)

    def _unpack(self, rows: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        x = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, self.dim)
        return ids, np.ascontiguousarray(x, dtype=np.float32)

    def _embeddings_of(
        self, conn: sqlite3.Connection, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, embeddings) of the given rowids (those that exist), in rowid order."""
        out_ids, out_x = [np.zeros(0, np.int64)], [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                "SELECT rowid, embedding FROM items"
                " WHERE rowid IN (SELECT value FROM json_each(?)) ORDER BY rowid",
                (_json_ids(ids[start : start + _CHUNK]),),
            ).fetchall()
            if rows:
                i, x = self._unpack(rows)
                out_ids.append(i)
                out_x.append(x)
        return np.concatenate(out_ids), np.concatenate(out_x)

    def _build(self, gallery: str, generation: int) -> _GalleryIndex:
        """A fresh index of the gallery from SQLite (rowid order). Holds no lock itself."""
        conn = self._wconn
        spec = self._spec
        n = conn.execute("SELECT COUNT(*) FROM items WHERE gallery = ?", (gallery,)).fetchone()[0]
        if spec.needs_training and n >= spec.train_size:
            ids = self._sqlite_ids(conn, gallery)
            cap = max(spec.train_size, 50_000)
            if len(ids) > cap:
                ids = np.sort(np.random.default_rng(0).choice(ids, cap, replace=False))
            _, sample = self._embeddings_of(conn, ids)
            gi = _GalleryIndex.trained(spec, generation, sample)
        elif not spec.exact and not spec.needs_training:
            base = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
            gi = _GalleryIndex(spec, generation, faiss.IndexIDMap2(base), exact=False)
        else:
            gi = _GalleryIndex(spec, generation)
        for ids, x in self._iter_embeddings(conn, gallery):
            gi.add(ids, x)
        return gi

    def _new_index(self, generation: int) -> _GalleryIndex:
        spec = self._spec
        if spec.exact or spec.needs_training:
            return _GalleryIndex(spec, generation)
        base = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        return _GalleryIndex(spec, generation, faiss.IndexIDMap2(base), exact=False)

    def _maybe_retrain(self, gallery: str) -> None:
        """Switch to the trained kind, or compact tombstones, when due. Caller holds _wlock.

        The new index is built while searches go on with the old one (writers are held back by
        _wlock, so nothing changes meanwhile) and swapped in under the exclusive lock.
        """
        gi = self._indexes[gallery]
        spec = self._spec
        due_training = not gi.switched and spec.needs_training and gi.live >= spec.train_size
        due_compaction = len(gi.deleted) >= max(
            COMPACT_MIN, int(gi.index.ntotal * COMPACT_FRACTION)
        )
        if not (due_training or due_compaction):
            return
        log.info(
            "gallery %s: %s the %s index over %d items",
            gallery,
            "training" if due_training else "compacting",
            spec.factory,
            gi.live,
        )
        try:
            new = self._build(gallery, gi.generation)
        except Exception:  # the current index is still correct, only slower or larger
            log.exception("gallery %s: index rebuild failed; keeping the current one", gallery)
            return
        with self._rw.write():
            self._indexes[gallery] = new

    # ---------------------------------------------------------------- validation

    def _vector(self, value: object, what: str) -> np.ndarray:
        return _check_vector(value, self.dim, what)

    def _validate(self, items: Sequence[NewItem]) -> np.ndarray:
        x = np.empty((len(items), self.dim), dtype=np.float32)
        for i, it in enumerate(items):
            x[i] = _check_item(it, self.dim, f"item {i}")
        return x

    # ---------------------------------------------------------------- writes

    def add(self, gallery: str, items: Sequence[NewItem]) -> list[Item]:
        _check_gallery(gallery)
        items = list(items)
        try:
            x = self._validate(items)
        except AttributeError as e:
            raise StoreError(f"items must be NewItem instances: {e}") from e
        if not items:
            return []
        with self._wlock:
            self._check_open()
            created = datetime.now(UTC)
            ids = [uuid.uuid4().hex for _ in items]
            rel = [
                f"crops/{gallery}/{i[:2]}/{i}.{_EXTENSIONS.get(it.image_type.lower(), 'bin')}"
                for i, it in zip(ids, items, strict=True)
            ]
            paths = [self.data_dir / r for r in rel]
            self._write_crops(paths, [bytes(it.image) for it in items])
            with self._rw.write():
                try:
                    rowids = self._insert(gallery, items, ids, rel, x, created)
                except BaseException:
                    self._unlink(paths)
                    raise
                gi = self._indexes.get(gallery)
                if gi is None:
                    gi = self._indexes[gallery] = self._new_index(0)
                    self.index_origin[gallery] = "new"
                gi.generation += 1
                try:
                    gi.add(rowids, x)
                except Exception:  # committed, so rebuild rather than disagree with SQLite
                    log.exception("index add failed for gallery %s: rebuilding", gallery)
                    self._indexes[gallery] = self._build(gallery, gi.generation)
            self._maybe_retrain(gallery)
        return [
            Item(
                item_id=i,
                gallery=gallery,
                camera_id=it.camera_id,
                timestamp=it.timestamp,
                image_type=it.image_type,
                created_at=created,
                identity=it.identity,
                track_id=it.track_id,
            )
            for i, it in zip(ids, items, strict=True)
        ]

    def _write_crops(self, paths: list[Path], data: list[bytes]) -> None:
        """Write and fsync every crop and its directory; on failure remove what was written.

        A batch goes through a small thread pool: concurrent fsyncs share journal commits,
        several times faster per file than one after another.
        """
        try:
            dirs = {p.parent for p in paths}
            changed: set[Path] = set()
            for d in sorted(dirs):
                changed |= _mkdirs(d)
            to_sync = sorted(dirs | changed)
            if len(paths) == 1:
                _write_file(paths[0], data[0])
                for d in to_sync:
                    _fsync_dir(d)
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(8, thread_name_prefix="crop-fsync")
            ex = self._executor
            for batch in (
                [ex.submit(_write_file, p, b) for p, b in zip(paths, data, strict=True)],
                [ex.submit(_fsync_dir, d) for d in to_sync],  # after every entry exists
            ):
                errors = [f.exception() for f in batch]
                first = next((e for e in errors if e is not None), None)
                if first is not None:
                    raise first
        except BaseException as e:
            self._unlink(paths)
            if _is_full(e):
                raise StoreFullError(f"disk full while writing crops: {e}") from e
            if isinstance(e, OSError):
                raise StoreError(f"cannot write crops: {e}") from e
            raise

    @staticmethod
    def _unlink(paths: list[Path]) -> None:
        for p in paths:
            with contextlib.suppress(OSError):
                p.unlink()

    def _insert(
        self,
        gallery: str,
        items: list[NewItem],
        ids: list[str],
        rel: list[str],
        x: np.ndarray,
        created: datetime,
    ) -> np.ndarray:
        """All rows and the generation bump in one transaction; returns the new rowids."""
        c = self._wconn
        created_text = created.isoformat()
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT OR IGNORE INTO meta (gallery, generation) VALUES (?, 0)", (gallery,))
            rowids = np.empty(len(items), dtype=np.int64)
            for n, it in enumerate(items):
                cur = c.execute(
                    "INSERT INTO items (item_id, gallery, camera_id, ts, timestamp, identity,"
                    " track_id, image_type, image_path, embedding, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ids[n],
                        gallery,
                        it.camera_id,
                        it.timestamp.timestamp(),
                        it.timestamp.isoformat(),
                        it.identity,
                        it.track_id,
                        it.image_type,
                        rel[n],
                        x[n].astype("<f4").tobytes(),
                        created_text,
                    ),
                )
                rowids[n] = cur.lastrowid
            c.execute("UPDATE meta SET generation = generation + 1 WHERE gallery = ?", (gallery,))
            c.execute("COMMIT")
        except sqlite3.Error as e:
            if c.in_transaction:
                c.execute("ROLLBACK")
            if _is_full(e):
                raise StoreFullError(f"disk full: {e}") from e
            raise StoreError(f"database error: {e}") from e
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return rowids

    def delete(self, item_id: str) -> bool:
        if not isinstance(item_id, str):
            return False
        with self._wlock:
            self._check_open()
            c = self._wconn
            row = c.execute(
                "SELECT rowid, gallery, image_path FROM items WHERE item_id = ?", (item_id,)
            ).fetchone()
            if row is None:
                return False
            rowid, gallery, rel = row
            with self._rw.write():
                try:
                    c.execute("BEGIN IMMEDIATE")
                    c.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
                    c.execute(
                        "UPDATE meta SET generation = generation + 1 WHERE gallery = ?",
                        (gallery,),
                    )
                    c.execute("COMMIT")
                except sqlite3.Error as e:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    if _is_full(e):
                        raise StoreFullError(f"disk full: {e}") from e
                    raise StoreError(f"database error: {e}") from e
                gi = self._indexes[gallery]
                gi.generation += 1
                try:
                    gi.remove(int(rowid))
                except Exception:
                    log.exception("index remove failed for gallery %s: rebuilding", gallery)
                    self._indexes[gallery] = self._build(gallery, gi.generation)
            with contextlib.suppress(OSError):
                (self.data_dir / rel).unlink()  # if lost in a crash: an orphan, removed on open
            self._maybe_retrain(gallery)
        return True

    # ---------------------------------------------------------------- snapshots and closing

    def snapshot(self) -> None:
        """Write the index of every gallery changed since its last snapshot (atomically)."""
        with self._wlock:
            self._check_open()
            try:
                self._snapshot_all()
            except OSError as e:
                raise (StoreFullError if _is_full(e) else StoreError)(f"snapshot: {e}") from e
            except RuntimeError as e:  # FAISS reports its I/O errors as RuntimeError
                full = "No space left" in str(e)
                raise (StoreFullError if full else StoreError)(f"snapshot: {e}") from e

    def _snapshot_all(self) -> None:
        for gallery, gi in list(self._indexes.items()):
            if gi.snapshot_generation == gi.generation:
                continue
            path = self._index_dir / f"{gallery}.faiss"
            ann_path = self._index_dir / f"{gallery}.ann.faiss"
            _atomic_write(path, lambda tmp, gi=gi: faiss.write_index(gi.index, str(tmp)))
            meta = {
                "generation": gi.generation,
                "factory": self._spec.factory,
                "dim": self.dim,
                "exact": gi.exact,
                "size": path.stat().st_size,
                "ann": None,
            }
            if gi.ann is not None:
                _atomic_write(ann_path, lambda tmp, gi=gi: faiss.write_index(gi.ann, str(tmp)))
                meta["ann"] = self._spec.factory
                meta["ann_size"] = ann_path.stat().st_size
            else:
                with contextlib.suppress(FileNotFoundError):
                    ann_path.unlink()  # left by an "auto" store: not needed, not used
            _atomic_write(
                self._index_dir / f"{gallery}.json",
                lambda tmp, meta=meta: tmp.write_text(json.dumps(meta)),
            )
            gi.snapshot_generation = gi.generation

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
                with contextlib.suppress(sqlite3.Error):
                    self._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._closed = True
                self._close_connections()
                self._indexes.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    # ---------------------------------------------------------------- reads

    def _row_item(self, row: tuple) -> Item:
        _, item_id, gallery, camera, ts_text, image_type, created, identity, track = row
        return Item(
            item_id=item_id,
            gallery=gallery,
            camera_id=camera,
            timestamp=datetime.fromisoformat(ts_text),
            image_type=image_type,
            created_at=datetime.fromisoformat(created),
            identity=identity,
            track_id=track,
        )

    def get(self, item_id: str) -> Item | None:
        if not isinstance(item_id, str):
            return None
        with self._rw.read():
            self._check_open()
            with self._reader() as conn:
                row = conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)
                ).fetchone()
        return None if row is None else self._row_item(row)

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        if not isinstance(item_id, str):
            return None
        with self._rw.read():
            self._check_open()
            with self._reader() as conn:
                row = conn.execute(
                    "SELECT embedding FROM items WHERE item_id = ?", (item_id,)
                ).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    def get_image(self, item_id: str) -> tuple[bytes, str] | None:
        if not isinstance(item_id, str):
            return None
        with self._rw.read():
            self._check_open()
            with self._reader() as conn:
                row = conn.execute(
                    "SELECT image_path, image_type FROM items WHERE item_id = ?", (item_id,)
                ).fetchone()
            if row is None:
                return None
            try:
                return (self.data_dir / row[0]).read_bytes(), row[1]
            except FileNotFoundError:
                return None

    def counts(self) -> dict[str, dict[str, int]]:
        with self._rw.read():
            self._check_open()
            with self._reader() as conn:
                rows = conn.execute(
                    "SELECT gallery, camera_id, COUNT(*) FROM items"
                    " GROUP BY gallery, camera_id ORDER BY gallery, camera_id"
                ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for gallery, camera, n in rows:
            out.setdefault(gallery, {})[camera] = n
        return out

    def count(self, gallery: str | None = None) -> int:
        """Items in ``gallery``, or in all galleries."""
        if gallery is not None:
            _check_gallery(gallery)
        with self._rw.read():
            self._check_open()
            with self._reader() as conn:
                if gallery is None:
                    return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
                return conn.execute(
                    "SELECT COUNT(*) FROM items WHERE gallery = ?", (gallery,)
                ).fetchone()[0]

    def index_info(self) -> dict[str, dict[str, Any]]:
        """Per gallery: index kind, vectors held, tombstones, generation, snapshot state."""
        with self._rw.read():
            self._check_open()
            return {
                g: {
                    "index": self._spec.name,
                    "factory": self._spec.factory,
                    "train_size": self._spec.train_size if self._spec.needs_training else None,
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

    def search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter | None = None,
        group_by: GroupBy | None = None,
    ) -> list[Hit]:
        _check_gallery(gallery)
        k = check_search_args(k, group_by)
        q = self._vector(query, "query").reshape(1, self.dim)
        if where is not None:
            if where.since is not None:
                _aware(where.since, "since")
            if where.until is not None:
                _aware(where.until, "until")
        threads = faiss.omp_get_max_threads()
        if self._search_threads is not None:
            faiss.omp_set_num_threads(self._search_threads)  # this thread only (OpenMP ICV)
        try:
            with self._rw.read():
                self._check_open()
                gi = self._indexes.get(gallery)
                if gi is None or gi.live == 0:
                    return []
                with self._reader() as conn:
                    flt = self._resolve(conn, gallery, gi, where)
                    if flt.n_avail == 0:
                        return []
                    chosen = self._top(conn, gi, q, k, flt, group_by)
                    items = self._items_of(conn, [i for _, i in chosen])
        finally:
            if self._search_threads is not None:
                faiss.omp_set_num_threads(threads)
        return [Hit(item=items[i], score=float(s)) for s, i in chosen if i in items]

    def _resolve(
        self, conn: sqlite3.Connection, gallery: str, gi: _GalleryIndex, where: SearchFilter | None
    ) -> _Filter:
        """Turn a filter into the rowids SQLite allows, or the rowids to leave out.

        A filter that only excludes (cameras, the query item) usually passes most of the
        gallery, so SQLite lists what it excludes instead: a few rows rather than nearly all.
        """
        negatives = np.fromiter(gi.deleted, np.int64) if gi.deleted else np.zeros(0, np.int64)
        w = where or SearchFilter()
        if w.cameras is None and w.since is None and w.until is None:
            parts = [negatives]
            if w.exclude_cameras:
                cur = conn.execute(
                    "SELECT rowid FROM items WHERE gallery = ?"
                    " AND camera_id IN (SELECT value FROM json_each(?))",
                    (gallery, json.dumps(sorted(str(c) for c in w.exclude_cameras))),
                )
                parts.append(np.fromiter((r[0] for r in cur), dtype=np.int64))
            if w.exclude_item is not None:
                row = conn.execute(
                    "SELECT rowid FROM items WHERE item_id = ? AND gallery = ?",
                    (w.exclude_item, gallery),
                ).fetchone()
                if row is not None:
                    parts.append(np.array([row[0]], dtype=np.int64))
            negatives = np.unique(np.concatenate(parts))  # sorted, no repeats
            return _Filter(gallery, None, negatives, int(gi.index.ntotal) - len(negatives))
        clauses = ["gallery = ?"]
        params: list[object] = [gallery]
        if w.cameras is not None:
            clauses.append("camera_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(str(c) for c in w.cameras)))
        if w.exclude_cameras:
            clauses.append("camera_id NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(str(c) for c in w.exclude_cameras)))
        if w.since is not None:
            clauses.append("ts >= ?")
            params.append(w.since.timestamp())
        if w.until is not None:
            clauses.append("ts <= ?")
            params.append(w.until.timestamp())
        if w.exclude_item is not None:
            clauses.append("item_id != ?")
            params.append(w.exclude_item)
        sql = "SELECT rowid FROM items WHERE " + " AND ".join(clauses) + " ORDER BY rowid"
        allowed = np.fromiter((r[0] for r in conn.execute(sql, params)), dtype=np.int64)
        return _Filter(gallery, allowed, np.zeros(0, np.int64), len(allowed))

    @staticmethod
    def _membership(ids: np.ndarray) -> tuple[Any, list[Any]]:
        """A selector for sorted ``ids``: a bitmap over rowids when dense, else a hash set."""
        if len(ids) * 64 >= int(ids[-1]) + 1:
            bits = np.zeros(int(ids[-1]) + 1, dtype=bool)
            bits[ids] = True
            packed = np.packbits(bits, bitorder="little")
            sel = faiss.IDSelectorBitmap(packed)
            return sel, [sel, packed]
        sel = faiss.IDSelectorBatch(ids)
        return sel, [sel, ids]

    @classmethod
    def _selector(cls, flt: _Filter) -> tuple[Any, list[Any]]:
        """The FAISS selector for a filter, and the objects that must outlive the search."""
        if flt.allowed is not None and len(flt.allowed):
            return cls._membership(flt.allowed)
        if flt.allowed is None and len(flt.negatives):
            inner, keep = cls._membership(flt.negatives)
            sel = faiss.IDSelectorNot(inner)
            return sel, [sel, *keep]
        return None, []

    def _ranked(
        self,
        conn: sqlite3.Connection,
        gi: _GalleryIndex,
        q: np.ndarray,
        kk: int,
        flt: _Filter,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``kk`` allowed items (fewer only when fewer exist), best first.

        Approximate kinds fetch ``REFINE`` x more candidates (at least 32 more) and keep the
        best ``kk``; those whose codes are not the float vectors (SQ, PQ) re-score them with the
        stored embeddings first: true cosines and better recall.
        """
        want = min(kk, flt.n_avail)
        if gi.ann is not None and flt.allowed is None:
            found = self._candidates(gi, q, kk, flt)
            if found is not None:
                return found
        if not gi.exact and flt.allowed is not None:
            if gi.spec.ivf_flat:
                return self._every_list(conn, gi, q, kk, flt)
            if len(flt.allowed) <= EXACT_LIMIT:
                return self._exact(q, kk, flt, conn)
        k_search = kk if gi.exact else min(max(REFINE * kk, kk + 32), int(gi.index.ntotal))
        sel, _keep = self._selector(flt)
        boost, limit = 1, gi.max_boost(k_search)
        while True:
            scores, ids = self._faiss_search(gi, q, k_search, sel, flt, boost)
            if len(ids) >= want or boost >= limit:
                break
            boost = min(limit, boost * 4)
        if len(ids) < want:
            if gi.exact:
                log.error("flat index returned %d of %d allowed items", len(ids), want)
                return _sorted_hits(scores, ids)
            return self._exact(q, kk, flt, conn)
        if not gi.exact and not gi.spec.flat_codes:
            ids, x = self._embeddings_of(conn, ids)
            scores = x @ q[0]
        scores, ids = _sorted_hits(scores, ids)
        return scores[:kk], ids[:kk]

    def _candidates(
        self, gi: _GalleryIndex, q: np.ndarray, kk: int, flt: _Filter
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Past the threshold of auto: the candidate index proposes, the flat one re-scores.

        Widens nprobe (x4) while it proposes fewer than exist; None if even every list does
        not (the caller then searches the flat index exactly).
        """
        spec = gi.spec
        want = min(kk, flt.n_avail)
        k_search = min(max(spec.candidates, REFINE * kk), int(gi.ann.ntotal))
        sel, _keep = self._selector(flt)
        nprobe = spec.nprobe
        while True:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            _, i = gi.ann.search(q, k_search, params=params)
            ids = i[0][i[0] >= 0]
            if len(ids) >= want or nprobe >= spec.nlist:
                break
            nprobe = min(spec.nlist, nprobe * 4)
        if len(ids) < want:
            return None
        x = gi.index.reconstruct_batch(ids)
        scores, ids = _sorted_hits(x @ q[0], ids)
        return scores[:kk], ids[:kk]

    def _every_list(
        self, conn: sqlite3.Connection, gi: _GalleryIndex, q: np.ndarray, kk: int, flt: _Filter
    ) -> tuple[np.ndarray, np.ndarray]:
        """IVF,Flat under a filter: every list scanned through the selector, an exact search.

        The lists hold the float vectors, so this is what a flat index with the same selector
        does: it scores only the allowed items, and costs about as much as they are many.
        """
        sel, _keep = self._selector(flt)
        params = faiss.SearchParametersIVF(sel=sel, nprobe=gi.spec.nlist)
        d, i = gi.index.search(q, min(kk, int(gi.index.ntotal)), params=params)
        valid = i[0] >= 0
        scores, ids = _sorted_hits(d[0][valid], i[0][valid])
        if len(ids) < min(kk, flt.n_avail):
            log.error("IVF scan returned %d of %d allowed items", len(ids), flt.n_avail)
            return self._exact(q, kk, flt, conn)
        return scores, ids

    def _faiss_search(
        self, gi: _GalleryIndex, q: np.ndarray, kk: int, sel: Any, flt: _Filter, boost: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not gi.no_params or sel is None:
            try:
                d, i = gi.index.search(q, kk, params=gi.params(sel, kk, boost))
                valid = i[0] >= 0
                return d[0][valid], i[0][valid]
            except RuntimeError as e:
                if "params" not in str(e):
                    raise
                gi.no_params = True  # e.g. IndexPQ: filter the unfiltered ranking instead
        m = kk
        ntotal = int(gi.index.ntotal)
        while True:
            d, i = gi.index.search(q, min(m, ntotal))
            d, i = d[0][i[0] >= 0], i[0][i[0] >= 0]
            keep = (
                np.isin(i, flt.allowed) if flt.allowed is not None else ~np.isin(i, flt.negatives)
            )
            if keep.sum() >= kk or m >= ntotal:
                return d[keep][:kk], i[keep][:kk]
            m *= 4

    def _exact(
        self, q: np.ndarray, kk: int, flt: _Filter, conn: sqlite3.Connection
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``kk`` from the stored embeddings (approximate kinds' safety net)."""
        best_s, best_i = np.zeros(0, np.float32), np.zeros(0, np.int64)

        def merge(ids: np.ndarray, x: np.ndarray) -> None:
            nonlocal best_s, best_i
            s = np.concatenate([best_s, x @ q[0]])
            i = np.concatenate([best_i, ids])
            s, i = _sorted_hits(s, i)
            best_s, best_i = s[:kk], i[:kk]

        if flt.allowed is not None:
            for start in range(0, len(flt.allowed), _CHUNK):
                merge(*self._embeddings_of(conn, flt.allowed[start : start + _CHUNK]))
        else:
            for ids, x in self._iter_embeddings(conn, flt.gallery):
                keep = ~np.isin(ids, flt.negatives)
                merge(ids[keep], x[keep])
        return best_s, best_i

    def _top(
        self,
        conn: sqlite3.Connection,
        gi: _GalleryIndex,
        q: np.ndarray,
        k: int,
        flt: _Filter,
        group_by: GroupBy | None,
    ) -> list[tuple[float, int]]:
        """The top k (or the best of k groups), with ties at the boundary resolved by rowid.

        Searches for more than needed and widens (x2, or x4 when grouping) until the k-th
        choice scores strictly above the last candidate (so every item tied with it was seen)
        or every allowed item was ranked.
        """
        n = flt.n_avail
        kk = min(n, max(4 * k, 32) if group_by else k + 1)
        labels: dict[int, str | None] = {}
        while True:
            scores, ids = self._ranked(conn, gi, q, kk, flt)
            exhausted = kk >= n or len(ids) < kk
            if group_by is None:
                chosen = list(zip(scores[:k].tolist(), ids[:k].tolist(), strict=True))
            else:
                self._fetch_labels(conn, ids, _LABEL_COLUMNS[group_by], labels)
                chosen, seen = [], set()
                for s, i in zip(scores.tolist(), ids.tolist(), strict=True):
                    label = labels.get(i)
                    key = ("item", i) if label is None else ("label", label)
                    if key not in seen:
                        seen.add(key)
                        chosen.append((s, i))
                        if len(chosen) == k:
                            break
            if exhausted or (len(chosen) == k and chosen[-1][0] > float(scores[-1])):
                return chosen
            kk = min(n, kk * (4 if group_by else 2))

    @staticmethod
    def _fetch_labels(
        conn: sqlite3.Connection, ids: np.ndarray, column: str, labels: dict[int, str | None]
    ) -> None:
        missing = [int(i) for i in ids if int(i) not in labels]
        for start in range(0, len(missing), _CHUNK):
            part = missing[start : start + _CHUNK]
            rows = conn.execute(
                f"SELECT rowid, {column} FROM items"  # column: a constant from _LABEL_COLUMNS
                " WHERE rowid IN (SELECT value FROM json_each(?))",
                (_json_ids(part),),
            )
            labels.update(rows.fetchall())

    def _items_of(self, conn: sqlite3.Connection, ids: list[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items"
                " WHERE rowid IN (SELECT value FROM json_each(?))",
                (_json_ids(ids[start : start + _CHUNK]),),
            )
            for row in rows:
                out[row[0]] = self._row_item(row)
        return out
