"""The scale-out gallery store: Milvus holds vectors and metadata, a shared folder the crops.

Several service replicas open a ``MilvusStore`` on the same Milvus and the same crop folder
and behave as one gallery: what one acknowledges, the next search on any other one sees.

Layout. One collection, ``<prefix>items``, for every gallery, with ``gallery`` as its
partition key, rather than a collection per gallery: galleries are created implicitly by the
first ``POST /gallery?gallery=NAME``, and a Milvus collection is heavy to create (shards,
index, load, a cluster-wide cap on their number) and racy to create from several replicas at
once; gallery names may hold '-', which collection names may not; and ``get``/``delete`` by
item id need no gallery. The partition key keeps a gallery's search within its own
partitions. Fields::

    item_id     VARCHAR(64), primary key   uuid4 hex, chosen by the store (or kept on import)
    gallery     VARCHAR(64), partition key
    embedding   FLOAT_VECTOR(dim)          L2-normalised; metric IP, so the score is the cosine
    camera_id   VARCHAR                    filtered with ``in`` / ``not in``
    ts          DOUBLE                     epoch seconds, for the time window
    timestamp   VARCHAR                    the ISO 8601 text as given (its UTC offset kept)
    identity    VARCHAR, nullable          None stays None
    track_id    VARCHAR, nullable
    image_type  VARCHAR                    the crop's media type
    crop_key    VARCHAR                    where the crop lives in the ``CropStore``
    created_at  VARCHAR                    ISO 8601, UTC: when the store acknowledged it
    seq         INT64                      acknowledgement order (ns clock): breaks score ties

Consistency. The collection is created with consistency level ``Strong`` and every search and
query asks for ``Strong`` as well (in case the collection was made by someone else): Milvus then
serves a read only once every write acknowledged before it is visible, whichever replica
wrote it. Its cost is a wait for the time tick on a busy cluster (milliseconds to a few hundred).

Filters are boolean expressions over the scalar fields (``gallery == "g" and camera_id in
[...] and ts >= 1714521600.0 ...``); Milvus applies them before the vector search, so with a
FLAT index the result is exactly the top k of the items that pass. User text only ever appears
inside a double-quoted string literal, escaped by ``_literal`` (backslash, double quote, CR, LF,
TAB: the escapes both Milvus's expression parser and Milvus Lite's accept). pymilvus's
``filter_params`` templating would be the alternative, but Milvus Lite 3.2 does not implement
it, so it could not be tested here; and pymilvus's own ``get(ids=...)`` does not escape string
keys, so this module never passes user ids through it.

Ranking and grouping are done here, the same way as the FAISS store: ask for k + 1 candidates
(grouping: max(4k, 32)), sort by score, then ``seq``, then id, and widen (x2; grouping x4)
until the k-th choice scores strictly above the last candidate or the filter is exhausted, so a
tie at the cut is never split arbitrarily and ``group_by`` returns k groups whenever k exist (an
item without the label is a group of its own). Milvus's own ``group_by_field`` is not used: it
would merge all unlabelled items into one group, and Milvus Lite's grouping over-fetches only
10 x k, so it can return fewer groups than exist. Past ``MAX_TOPK`` candidates (Milvus's limit
on k) the search scans the filtered items and ranks them exactly in numpy.

Crops do not go into Milvus (a VARCHAR holds at most 64 KiB and large blobs do not belong in a
vector database): a ``CropStore`` keeps them where every replica reaches them.
``LocalCropStore`` is a directory that all replicas mount (a shared volume, NFS, EFS, ...).

Durability: ``add`` writes and fsyncs the crops first, then inserts the rows; it returns after
Milvus acknowledged the insert. On Milvus standalone or a cluster an acknowledged insert is in
its write-ahead log (the message queue / Woodpecker) and survives a crash of any node. Milvus
Lite writes every insert to its WAL and flushes it to the operating system before it answers,
so an acknowledged item survives the process being killed (kill -9) and a restart; it fsyncs
that WAL only on close, so a power cut can lose the last writes on Milvus Lite. Milvus Lite 3.2
also breaks its WAL when two inserts run at once, so this store serialises its writes to a
Milvus Lite database (see ``_lite_acquire``); servers need no such lock. A crash between
the crop and the insert leaves an orphan crop, which ``remove_orphan_crops`` removes later (not
on open: another replica may be between those two steps right then).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

try:
    from pymilvus import DataType, MilvusClient, MilvusException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the Milvus gallery store needs pymilvus: pip install 'sona-reid[milvus]'"
    ) from exc

from .base import (
    GalleryStore,
    GroupBy,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    check_search_args,
)
from .faiss_sqlite import (
    _EXTENSIONS,
    _FULL_ERRNOS,
    _aware,
    _check_gallery,
    _check_item,
    _check_vector,
    _fsync_dir,
    _mkdirs,
)

__all__ = [
    "MAX_TOPK",
    "CropStore",
    "LocalCropStore",
    "MilvusStore",
    "MilvusUnavailableError",
]

log = logging.getLogger(__name__)

#: Milvus refuses a search for more than this many results (its default topK limit).
MAX_TOPK = 16384
#: Longest camera id, identity or track label, in UTF-8 bytes (the API allows 128 characters).
TEXT_MAX = 1024
_ID_MAX = 64
_ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
_FULL_WORDS = ("no space left", "disk quota", "quotaexceeded", "quota exceeded")
_LABEL_FIELDS = {"identity": "identity", "track": "track_id"}
_META_FIELDS = [
    "item_id",
    "gallery",
    "camera_id",
    "timestamp",
    "identity",
    "track_id",
    "image_type",
    "created_at",
    "seq",
]
_SCAN_BATCH = 4096
_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")


class MilvusUnavailableError(StoreUnavailableError):
    """Milvus failed or could not be reached: the request itself was fine (not a StoreError)."""


# --------------------------------------------------------------------------------------------
# crops


class CropStore(abc.ABC):
    """Where crop bytes live so that every service replica reaches them.

    Keys are relative paths made by the store (``<gallery>/<xx>/<item_id>.<ext>``).
    """

    @abc.abstractmethod
    def put_many(self, keys: Sequence[str], data: Sequence[bytes]) -> None:
        """Store every crop durably, or none: on failure, remove what was written and raise."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a crop; a missing one is not an error."""

    @abc.abstractmethod
    def entries(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (epoch seconds): for orphan sweeps."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections)."""


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return any(word in str(exc).lower() for word in _FULL_WORDS)


class LocalCropStore(CropStore):
    """Crops as files under ``root``: a directory every replica mounts (volume, NFS, EFS).

    Each crop is written to a temporary name, fsynced, renamed into place and its directory
    fsynced, so a reader (on any replica) sees the whole crop or none, and a rewrite of the same
    key (an import run again) replaces it atomically. A batch goes through a small thread pool:
    concurrent fsyncs share journal commits.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise (StoreFullError if _is_full(e) else StoreError)(f"crops dir: {e}") from e
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
            raise StoreError(f"bad crop key {key!r}")
        return self.root.joinpath(*parts)

    def _write(self, key: str, data: bytes) -> Path:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    def put_many(self, keys: Sequence[str], data: Sequence[bytes]) -> None:
        paths = [self._path(k) for k in keys]
        try:
            dirs = {p.parent for p in paths}
            changed: set[Path] = set()
            for d in sorted(dirs):
                changed |= _mkdirs(d)
            if len(keys) == 1:
                self._write(keys[0], data[0])
            else:
                with self._lock:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(8, thread_name_prefix="crop-fsync")
                futures = [
                    self._executor.submit(self._write, k, d)
                    for k, d in zip(keys, data, strict=True)
                ]
                errors = [f.exception() for f in futures]
                first = next((e for e in errors if e is not None), None)
                if first is not None:
                    raise first
            for d in sorted(dirs | changed):  # the renames, and directories made for them
                _fsync_dir(d)
        except BaseException as e:
            for p in paths:
                with contextlib.suppress(OSError):
                    p.unlink()
            if _is_full(e):
                raise StoreFullError(f"disk full while writing crops: {e}") from e
            if isinstance(e, OSError):
                raise StoreError(f"cannot write crops: {e}") from e
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def entries(self) -> Iterator[tuple[str, float]]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    yield path.relative_to(self.root).as_posix(), path.stat().st_mtime

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


# --------------------------------------------------------------------------------------------
# Milvus Lite: one embedded server per database path, shared by the stores of this process


_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}
_lite_write_locks: dict[str, threading.Lock] = {}


def is_lite(uri: str) -> bool:
    """A local ``.db`` path: pymilvus runs Milvus Lite in this process for it."""
    return uri.endswith(".db") and "://" not in uri


def _lite_acquire(path: str) -> threading.Lock:
    """Count a user of the embedded server; returns the lock its writes must hold.

    Milvus Lite 3.2 serves each request on a thread of a pool but does not serialise writes to
    a collection: two inserts at once interleave their bytes in its write-ahead log, and the
    recovery after a crash stops at the first broken record, losing acknowledged items (seen
    here with the service's kill -9 test). Only this process can open the database (Milvus Lite
    holds a file lock), so one lock per database path, held around every insert and delete,
    is enough. Milvus standalone and clusters need no such lock.
    """
    with _lite_lock:
        _lite_users[path] = _lite_users.get(path, 0) + 1
        return _lite_write_locks.setdefault(path, threading.Lock())


def _lite_release(path: str) -> None:
    """Stop the embedded server once no store of this process uses it (closes its WAL)."""
    with _lite_lock:
        n = _lite_users.get(path, 0) - 1
        if n > 0:
            _lite_users[path] = n
            return
        _lite_users.pop(path, None)
    with contextlib.suppress(ImportError):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


class _DropLiteIteratorWarning(logging.Filter):
    """Milvus Lite has no MVCC timestamp for iterators; pymilvus warns about it on every scan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


def _quiet_lite_iterators() -> None:
    logger = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _DropLiteIteratorWarning) for f in logger.filters):
        logger.addFilter(_DropLiteIteratorWarning())


# --------------------------------------------------------------------------------------------
# expressions


def _literal(text: str) -> str:
    """``text`` as a double-quoted Milvus string literal: the only place user text goes."""
    if not isinstance(text, str):
        raise StoreError(f"expected a string, not {type(text).__name__}")
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _number(value: float) -> str:
    """A float literal that parses back to exactly ``value`` (no exponent notation)."""
    if not math.isfinite(value):
        raise StoreError(f"not a finite number: {value!r}")
    text = repr(float(value))
    return text if "e" not in text else f"{value:.30f}"


def _string_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_literal(v) for v in values) + "]"


def filter_expression(gallery: str, where: SearchFilter | None) -> str | None:
    """The Milvus boolean expression for ``where`` within ``gallery``; None: nothing can pass."""
    w = where or SearchFilter()
    parts = [f"gallery == {_literal(gallery)}"]
    if w.cameras is not None:
        if not w.cameras:
            return None
        parts.append(f"camera_id in {_string_list(sorted(w.cameras))}")
    if w.exclude_cameras:
        parts.append(f"camera_id not in {_string_list(sorted(w.exclude_cameras))}")
    if w.since is not None:
        parts.append(f"ts >= {_number(w.since.timestamp())}")
    if w.until is not None:
        parts.append(f"ts <= {_number(w.until.timestamp())}")
    if w.exclude_item is not None and _ITEM_ID.fullmatch(w.exclude_item):
        parts.append(f"item_id != {_literal(w.exclude_item)}")  # other text matches no item
    return " and ".join(parts)


# --------------------------------------------------------------------------------------------
# the store


@dataclass
class _Row:
    score: float
    entity: dict[str, Any]

    @property
    def key(self) -> tuple[float, int, str]:
        return (-self.score, int(self.entity["seq"]), str(self.entity["item_id"]))


def _item(e: dict[str, Any]) -> Item:
    return Item(
        item_id=e["item_id"],
        gallery=e["gallery"],
        camera_id=e["camera_id"],
        timestamp=datetime.fromisoformat(e["timestamp"]),
        image_type=e["image_type"],
        created_at=datetime.fromisoformat(e["created_at"]),
        identity=e.get("identity"),
        track_id=e.get("track_id"),
    )


class MilvusStore(GalleryStore):
    """Galleries in one Milvus collection, crops in a shared ``CropStore``; see the module doc.

    ``uri``: ``http://host:19530`` (standalone or cluster) or a local ``.db`` path (Milvus Lite,
    embedded in this process). ``token``: ``user:password`` or an API key. ``crops``: a
    ``CropStore`` or a directory all replicas share; for Milvus Lite it defaults to a folder
    beside the ``.db``. ``index``: the vector index, ``FLAT`` (exact), ``IVF_FLAT``, ``HNSW`` or
    ``AUTOINDEX``; by default FLAT on Milvus Lite and HNSW (M=32, efConstruction=256) on a
    server. An existing collection keeps the index it was created with. ``ef_search`` (HNSW)
    and ``nprobe`` (IVF) tune the approximate kinds; the search widens ``ef`` to k when larger.
    """

    def __init__(
        self,
        uri: str,
        dim: int = 1536,
        *,
        token: str | None = None,
        collection_prefix: str = "sona_",
        crops: CropStore | Path | str | None = None,
        index: str | None = None,
        ef_search: int = 128,
        nprobe: int = 32,
        timeout: float = 30.0,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= 32768:
            raise StoreError(f"dim must be an integer in [2, 32768] for Milvus, not {dim!r}")
        if not isinstance(collection_prefix, str) or not _PREFIX.fullmatch(collection_prefix):
            raise StoreError(
                f"bad collection prefix {collection_prefix!r}: a letter or '_', then letters, "
                "digits or '_'"
            )
        uri = str(uri)
        self.dim = dim
        self.uri = uri
        self.lite = is_lite(uri)
        self.collection = f"{collection_prefix}items"
        self.timeout = timeout
        self.ef_search = max(1, int(ef_search))
        self.nprobe = max(1, int(nprobe))
        self._closed = True
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        requested = (index or ("FLAT" if self.lite else "HNSW")).upper()
        if requested not in _INDEXES:
            raise StoreError(f"index must be one of {', '.join(_INDEXES)}, not {index!r}")

        if crops is None:
            if not self.lite:
                raise StoreError("crops: give a directory every replica mounts (SONA_CROPS_DIR)")
            crops = Path(uri).with_name(Path(uri).stem + "-crops")
        self.crops = crops if isinstance(crops, CropStore) else LocalCropStore(crops)

        self._lite_path: str | None = None
        self._write_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.lite:
            path = Path(uri).resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {path.parent}: {e}") from e
            self._lite_path = str(path)
            uri = str(path)
            _quiet_lite_iterators()
            self._write_lock = _lite_acquire(self._lite_path)
        try:
            self._client = self._connect(uri, token)
            try:
                self.index_type = self._open_collection(requested)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._client.close()
                raise
        except BaseException:
            if self._lite_path is not None:
                _lite_release(self._lite_path)
            raise
        self._closed = False

    # ---------------------------------------------------------------- opening

    def _connect(self, uri: str, token: str | None) -> MilvusClient:
        try:
            return MilvusClient(uri=uri, token=token or "", timeout=self.timeout)
        except MilvusException as e:
            if self.lite:
                if "milvus-lite is required" in str(e) or "milvus_lite" in str(e):
                    raise StoreError(
                        f"{self.uri} is a Milvus Lite database: pip install milvus-lite"
                    ) from e
                raise StoreError(
                    f"cannot open Milvus Lite at {self.uri}: is it open in another process "
                    f"(a running service)? ({e.message})"
                ) from e
            raise MilvusUnavailableError(f"cannot connect to Milvus at {self.uri}: {e}") from e

    def _schema(self) -> Any:
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=_ID_MAX)
        s.add_field("gallery", DataType.VARCHAR, max_length=64, is_partition_key=True)
        s.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        s.add_field("camera_id", DataType.VARCHAR, max_length=TEXT_MAX)
        s.add_field("ts", DataType.DOUBLE)
        s.add_field("timestamp", DataType.VARCHAR, max_length=64)
        s.add_field("identity", DataType.VARCHAR, max_length=TEXT_MAX, nullable=True)
        s.add_field("track_id", DataType.VARCHAR, max_length=TEXT_MAX, nullable=True)
        s.add_field("image_type", DataType.VARCHAR, max_length=255)
        s.add_field("crop_key", DataType.VARCHAR, max_length=512)
        s.add_field("created_at", DataType.VARCHAR, max_length=64)
        s.add_field("seq", DataType.INT64)
        return s

    def _index_params(self, index_type: str) -> Any:
        params = self._client.prepare_index_params()
        vector_params: dict[str, Any] = {}
        if index_type == "HNSW":
            vector_params = {"M": 32, "efConstruction": 256}
        elif index_type == "IVF_FLAT":
            vector_params = {"nlist": 1024}
        params.add_index(
            field_name="embedding", index_type=index_type, metric_type="IP", params=vector_params
        )
        params.add_index(field_name="camera_id", index_type="INVERTED")
        params.add_index(field_name="ts", index_type="INVERTED")
        return params

    def _open_collection(self, requested: str) -> str:
        """Create the collection (indexes, Strong consistency) or check the existing one; load it.

        Several replicas may start at once: whoever loses the race to create the collection or
        its indexes uses the winner's. A collection left without indexes (its creator died in
        between) gets them here.
        """
        c, name, t = self._client, self.collection, self.timeout
        with self._errors("open"):
            if not c.has_collection(name, timeout=t):
                try:
                    c.create_collection(
                        name, schema=self._schema(), consistency_level="Strong", timeout=t
                    )
                except MilvusException:
                    if not c.has_collection(name, timeout=t):
                        raise  # not a race with another replica creating it
            info = c.describe_collection(name, timeout=t)
            fields = {f["name"]: f for f in info["fields"]}
            missing = sorted({*_META_FIELDS, "embedding", "ts", "crop_key"} - set(fields))
            if missing:
                raise StoreError(
                    f"collection {name} exists with another schema (missing {missing}): "
                    "use another collection prefix"
                )
            held = int(fields["embedding"].get("params", {}).get("dim", 0))
            if held != self.dim:
                raise StoreError(f"collection {name} holds {held}-d embeddings, not {self.dim}-d")
            if not c.list_indexes(name, field_name="embedding", timeout=t):
                try:
                    # sync=False: pymilvus would poll each new index with 0.5 s sleeps; the
                    # collection is empty and load_collection waits for what it needs
                    c.create_index(name, self._index_params(requested), timeout=t, sync=False)
                except MilvusException:
                    if not c.list_indexes(name, field_name="embedding", timeout=t):
                        raise
            index_type = requested
            with contextlib.suppress(MilvusException, KeyError, IndexError):
                names = c.list_indexes(name, field_name="embedding", timeout=t)
                index_type = str(c.describe_index(name, names[0], timeout=t)["index_type"]).upper()
            if index_type != requested:
                log.warning(
                    "collection %s has a %s index (not %s): keeping it", name, index_type, requested
                )
            c.load_collection(name, timeout=t)
        return index_type

    # ---------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Milvus errors as store errors: disk full, or Milvus unavailable (not the caller's)."""
        try:
            yield
        except (StoreError, MilvusUnavailableError):
            raise
        except MilvusException as e:
            if _is_full(e):
                raise StoreFullError(f"Milvus is out of space ({what}): {e}") from e
            if self._closed:
                raise StoreError("the store is closed") from e
            raise MilvusUnavailableError(f"Milvus {what} failed: {e}") from e
        except Exception as e:
            if self._closed:
                raise StoreError("the store is closed") from e
            if type(e).__module__.startswith("grpc"):
                raise MilvusUnavailableError(f"Milvus {what} failed: {e}") from e
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _query(self, expr: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"limit": limit} if limit is not None else {}
        with self._errors("query"):
            return self._client.query(
                self.collection,
                filter=expr,
                output_fields=fields,
                consistency_level="Strong",
                timeout=self.timeout,
                **kwargs,
            )

    def _scan(self, expr: str, fields: list[str], batch: int = _SCAN_BATCH) -> Iterator[list[dict]]:
        """Every row matching ``expr``, a batch at a time (a query iterator, in key order)."""
        with self._errors("scan"):
            it = self._client.query_iterator(
                self.collection,
                batch_size=batch,
                filter=expr,
                output_fields=fields,
                timeout=self.timeout,
            )
        try:
            while True:
                with self._errors("scan"):
                    rows = it.next()
                if not rows:
                    return
                yield rows
        finally:
            with contextlib.suppress(Exception):
                it.close()

    def _by_id(self, item_id: object, fields: list[str]) -> dict | None:
        if not isinstance(item_id, str) or not _ITEM_ID.fullmatch(item_id):
            return None  # not an id this store gives out: no such item
        self._check_open()
        rows = self._query(f"item_id == {_literal(item_id)}", fields, limit=1)
        return rows[0] if rows else None

    def _next_seqs(self, n: int) -> list[int]:
        """Increasing acknowledgement numbers (ns clock, never repeating in this process)."""
        with self._seq_lock:
            base = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = base + n - 1
        return list(range(base, base + n))

    # ---------------------------------------------------------------- validation

    def _vector(self, value: object, what: str) -> np.ndarray:
        return _check_vector(value, self.dim, what)

    @staticmethod
    def _text(value: str, what: str) -> None:
        if len(value.encode("utf-8", "surrogatepass")) > TEXT_MAX:
            raise StoreError(f"{what} is longer than {TEXT_MAX} bytes")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise StoreError(f"{what} is not valid Unicode text") from e

    def _validate(self, items: Sequence[NewItem]) -> np.ndarray:
        x = np.empty((len(items), self.dim), dtype=np.float32)
        for i, it in enumerate(items):
            what = f"item {i}"
            try:
                x[i] = _check_item(it, self.dim, what)
            except AttributeError as e:
                raise StoreError(f"items must be NewItem instances: {e}") from e
            # Milvus fields have a byte length and must hold valid Unicode
            self._text(it.camera_id, f"{what}: camera_id")
            for name in ("identity", "track_id"):
                value = getattr(it, name)
                if value is not None:
                    self._text(value, f"{what}: {name}")
            if len(it.image_type) > 255:
                raise StoreError(f"{what}: media type too long")
        return x

    # ---------------------------------------------------------------- writes

    def add(self, gallery: str, items: Sequence[NewItem]) -> list[Item]:
        return self._write(gallery, list(items), None, None)

    def restore(
        self,
        gallery: str,
        items: Sequence[NewItem],
        item_ids: Sequence[str],
        created_at: Sequence[datetime],
    ) -> list[Item]:
        """Add items keeping their ids and acknowledgement times: a gallery import.

        Ids already in this gallery are skipped (an import run again continues where it
        stopped); an id held by another gallery is refused. Returns the items added.
        """
        items, item_ids, created_at = list(items), list(item_ids), list(created_at)
        if not len(items) == len(item_ids) == len(created_at):
            raise StoreError("items, item_ids and created_at differ in length")
        for i, item_id in enumerate(item_ids):
            if not isinstance(item_id, str) or not _ITEM_ID.fullmatch(item_id):
                raise StoreError(f"item {i}: bad item id {item_id!r}")
            _aware(created_at[i], f"item {i} created_at")
        if len(set(item_ids)) != len(item_ids):
            raise StoreError("repeated item ids")
        _check_gallery(gallery)
        self._check_open()
        existing: dict[str, str] = {}
        for start in range(0, len(item_ids), 1000):
            part = item_ids[start : start + 1000]
            for row in self._query(f"item_id in {_string_list(part)}", ["item_id", "gallery"]):
                existing[row["item_id"]] = row["gallery"]
        elsewhere = sorted(i for i, g in existing.items() if g != gallery)
        if elsewhere:
            raise StoreError(f"item ids already in another gallery: {', '.join(elsewhere[:5])}")
        keep = [n for n, i in enumerate(item_ids) if i not in existing]
        return self._write(
            gallery,
            [items[n] for n in keep],
            [item_ids[n] for n in keep],
            [created_at[n] for n in keep],
        )

    def _write(
        self,
        gallery: str,
        items: list[NewItem],
        ids: list[str] | None,
        created: list[datetime] | None,
    ) -> list[Item]:
        _check_gallery(gallery)
        x = self._validate(items)
        self._check_open()
        if not items:
            return []
        now = datetime.now(UTC)
        if ids is None:
            ids = [uuid.uuid4().hex for _ in items]
        if created is None:
            created = [now] * len(items)
        seqs = self._next_seqs(len(items))
        keys = [
            f"{gallery}/{i[:2]}/{i}.{_EXTENSIONS.get(it.image_type.lower(), 'bin')}"
            for i, it in zip(ids, items, strict=True)
        ]
        self.crops.put_many(keys, [bytes(it.image) for it in items])
        rows = [
            {
                "item_id": ids[n],
                "gallery": gallery,
                "embedding": x[n],
                "camera_id": it.camera_id,
                "ts": it.timestamp.timestamp(),
                "timestamp": it.timestamp.isoformat(),
                "identity": it.identity,
                "track_id": it.track_id,
                "image_type": it.image_type,
                "crop_key": keys[n],
                "created_at": created[n].isoformat(),
                "seq": seqs[n],
            }
            for n, it in enumerate(items)
        ]
        try:
            with self._errors("insert"), self._write_lock:
                result = self._client.insert(self.collection, rows, timeout=self.timeout)
            if int(result.get("insert_count", len(rows))) != len(rows):
                raise MilvusUnavailableError(
                    f"Milvus inserted {result.get('insert_count')} of {len(rows)} rows"
                )
        except BaseException:
            # all or none: take back whatever part of the batch Milvus may have kept
            with contextlib.suppress(Exception), self._write_lock:
                self._client.delete(
                    self.collection, filter=f"item_id in {_string_list(ids)}", timeout=self.timeout
                )
            for key in keys:
                with contextlib.suppress(Exception):
                    self.crops.delete(key)
            raise
        return [
            Item(
                item_id=ids[n],
                gallery=gallery,
                camera_id=it.camera_id,
                timestamp=it.timestamp,
                image_type=it.image_type,
                created_at=created[n],
                identity=it.identity,
                track_id=it.track_id,
            )
            for n, it in enumerate(items)
        ]

    def delete(self, item_id: str) -> bool:
        row = self._by_id(item_id, ["item_id", "crop_key"])
        if row is None:
            return False
        with self._errors("delete"), self._write_lock:
            self._client.delete(
                self.collection, filter=f"item_id == {_literal(item_id)}", timeout=self.timeout
            )
        self.crops.delete(row["crop_key"])  # if lost in a crash: an orphan, swept later
        return True

    def remove_orphan_crops(self, min_age_s: float = 3600.0) -> int:
        """Delete crops older than ``min_age_s`` that no row references; returns how many.

        Leftovers of adds that crashed between the crop and the insert. Younger crops are left
        alone: another replica may be between those two steps right now.
        """
        self._check_open()
        cutoff = time.time() - min_age_s
        candidates: dict[str, str] = {}
        for key, mtime in self.crops.entries():
            if mtime > cutoff:
                continue
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".tmp"):
                self.crops.delete(key)  # a write that never got renamed into place
                continue
            candidates[key] = name.split(".", 1)[0]
        removed = 0
        keys = list(candidates)
        for start in range(0, len(keys), 1000):
            part = keys[start : start + 1000]
            ids = sorted({candidates[k] for k in part if _ITEM_ID.fullmatch(candidates[k])})
            held = set()
            if ids:
                rows = self._query(f"item_id in {_string_list(ids)}", ["crop_key"])
                held = {r["crop_key"] for r in rows}
            for key in part:
                if key not in held:
                    self.crops.delete(key)
                    removed += 1
        if removed:
            log.info("removed %d orphan crops", removed)
        return removed

    # ---------------------------------------------------------------- reads

    def get(self, item_id: str) -> Item | None:
        row = self._by_id(item_id, _META_FIELDS)
        return None if row is None else _item(row)

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        row = self._by_id(item_id, ["embedding"])
        return None if row is None else np.asarray(row["embedding"], dtype=np.float32)

    def get_image(self, item_id: str) -> tuple[bytes, str] | None:
        row = self._by_id(item_id, ["crop_key", "image_type"])
        if row is None:
            return None
        data = self.crops.get(row["crop_key"])
        return None if data is None else (data, row["image_type"])

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per gallery and camera: a scan of two short fields of every row, O(n)."""
        self._check_open()
        out: dict[str, dict[str, int]] = {}
        for rows in self._scan("", ["gallery", "camera_id"], batch=MAX_TOPK):
            for r in rows:
                cams = out.setdefault(r["gallery"], {})
                cams[r["camera_id"]] = cams.get(r["camera_id"], 0) + 1
        return {g: dict(sorted(c.items())) for g, c in sorted(out.items())}

    def count(self, gallery: str | None = None) -> int:
        """Items in ``gallery``, or in all galleries (Milvus counts; no scan)."""
        if gallery is not None:
            _check_gallery(gallery)
        self._check_open()
        expr = "" if gallery is None else f"gallery == {_literal(gallery)}"
        rows = self._query(expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def iter_items(
        self, gallery: str, batch: int = 1000
    ) -> Iterator[list[tuple[Item, np.ndarray, int]]]:
        """The gallery's items with embeddings and ``seq``, in acknowledgement order (export).

        Lists (seq, id) of the whole gallery first (a scan of two small fields), then fetches
        the rows a batch at a time; items deleted meanwhile are left out.
        """
        _check_gallery(gallery)
        self._check_open()
        order = sorted(
            (int(r["seq"]), r["item_id"])
            for rows in self._scan(f"gallery == {_literal(gallery)}", ["item_id", "seq"])
            for r in rows
        )
        for start in range(0, len(order), batch):
            ids = [i for _, i in order[start : start + batch]]
            rows = self._query(f"item_id in {_string_list(ids)}", [*_META_FIELDS, "embedding"])
            found = {r["item_id"]: r for r in rows}
            yield [
                (_item(r), np.asarray(r["embedding"], dtype=np.float32), int(r["seq"]))
                for r in (found.get(i) for i in ids)
                if r is not None
            ]

    # ---------------------------------------------------------------- search

    def _search_params(self, limit: int) -> dict[str, Any]:
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(self.ef_search, limit)}}
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": self.nprobe}}
        return {"metric_type": "IP", "params": {}}

    def _candidates(self, expr: str, q: np.ndarray, limit: int) -> tuple[list[_Row], bool]:
        """The best ``limit`` rows passing ``expr``, sorted; True when no more exist."""
        if limit > MAX_TOPK:
            return self._exact(expr, q), True
        with self._errors("search"):
            result = self._client.search(
                self.collection,
                data=[q],
                limit=limit,
                filter=expr,
                output_fields=_META_FIELDS,
                search_params=self._search_params(limit),
                consistency_level="Strong",
                timeout=self.timeout,
            )
        rows = [_Row(float(h["distance"]), dict(h["entity"])) for h in result[0]]
        rows.sort(key=lambda r: r.key)
        return rows, len(rows) < limit

    def _exact(self, expr: str, q: np.ndarray) -> list[_Row]:
        """Every row passing ``expr``, scored exactly here: searches past Milvus's top-k limit."""
        out: list[_Row] = []
        for rows in self._scan(expr, [*_META_FIELDS, "embedding"]):
            x = np.asarray([r.pop("embedding") for r in rows], dtype=np.float32)
            scores = x @ q
            out.extend(_Row(float(s), r) for s, r in zip(scores.tolist(), rows, strict=True))
        out.sort(key=lambda r: r.key)
        return out

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
        q = self._vector(query, "query")
        if where is not None:
            if where.since is not None:
                _aware(where.since, "since")
            if where.until is not None:
                _aware(where.until, "until")
            for name in ("cameras", "exclude_cameras"):
                values = getattr(where, name)
                if values is not None and not all(isinstance(v, str) for v in values):
                    raise StoreError(f"{name} must hold strings")
            if where.exclude_item is not None and not isinstance(where.exclude_item, str):
                raise StoreError("exclude_item must be a string")
        self._check_open()
        expr = filter_expression(gallery, where)
        if expr is None:
            return []
        label = _LABEL_FIELDS[group_by] if group_by else None
        limit = max(4 * k, 32) if label else k + 1
        while True:
            rows, exhausted = self._candidates(expr, q, limit)
            chosen = self._choose(rows, k, label)
            if exhausted or (len(chosen) == k and chosen[-1].score > rows[-1].score):
                return [Hit(item=_item(r.entity), score=r.score) for r in chosen]
            limit *= 4 if label else 2

    @staticmethod
    def _choose(rows: list[_Row], k: int, label: str | None) -> list[_Row]:
        if label is None:
            return rows[:k]
        chosen: list[_Row] = []
        seen: set[tuple[str, str]] = set()
        for r in rows:
            value = r.entity.get(label)
            key = ("item", r.entity["item_id"]) if value is None else ("label", value)
            if key not in seen:
                seen.add(key)
                chosen.append(r)
                if len(chosen) == k:
                    break
        return chosen

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the connection (and a Milvus Lite server no other store uses); idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
        self.crops.close()
        if self._lite_path is not None:
            _lite_release(self._lite_path)
