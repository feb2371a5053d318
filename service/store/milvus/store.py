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
    identity    VARCHAR                    "" for None (nullable fields need Milvus 2.5)
    track_id    VARCHAR                    "" for None
    image_type  VARCHAR                    the crop's media type
    crop_key    VARCHAR                    where the crop lives in the ``CropStore``
    created_at  VARCHAR                    ISO 8601, UTC: when the store acknowledged it
    seq         INT64                      acknowledgement order (ns clock): breaks score ties

Consistency. Every search and query asks for the store's ``consistency`` (``Session`` by
default; the collection is created with it too). ``Strong``: Milvus serves a read only once
every write acknowledged before it is visible, whichever replica wrote it; its cost is a wait
for the time tick, many times a search's own cost on a real server (bench/RESULTS.md).
``Session``: this replica's own inserts are visible to its next read (the client tracks
them), other replicas' writes within Milvus's time tick. pymilvus does not track a session's
deletes, so for ``STRONG_AFTER_DELETE_S`` after this replica deletes, its reads ask for
``Strong``: a replica always reads its own writes. ``Bounded`` and ``Eventually`` may miss even
this replica's latest inserts for a moment.

Ranking and grouping go through ``ranking.top_k``, as on the FAISS store: candidates sorted by
score, then ``seq``, then id, so a tie at the cut is never split arbitrarily, and ``group_by``
returns k groups whenever k exist. Milvus's own ``group_by_field`` is not used: it
would merge all unlabelled items into one group, and Milvus Lite's grouping over-fetches only
10 x k, so it can return fewer groups than exist. Past ``MAX_TOPK`` candidates (Milvus's limit
on k) the search scans the filtered items and ranks them exactly in numpy.

Crops do not go into Milvus (a VARCHAR holds at most 64 KiB and large blobs do not belong in a
vector database): a ``CropStore`` (``crops.py``) keeps them where every replica reaches them,
by default a directory that all replicas mount (a shared volume, NFS, EFS, ...).

Durability: ``add`` writes and fsyncs the crops first, then inserts the rows; it returns after
Milvus acknowledged the insert. On Milvus standalone or a cluster an acknowledged insert is in
its write-ahead log (the message queue / Woodpecker) and survives a crash of any node. Milvus
Lite writes every insert to its WAL and flushes it to the operating system before it answers,
so an acknowledged item survives the process being killed (kill -9) and a restart; it fsyncs
that WAL only on close, so a power cut can lose the last writes on Milvus Lite. Milvus Lite 3.2
also breaks its WAL when two inserts run at once, so this store serialises its writes to a
Milvus Lite database (see ``lite.acquire``); servers need no such lock. A crash between
the crop and the insert leaves an orphan crop, which ``remove_orphan_crops`` removes later (not
on open: another replica may be between those two steps right then).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

try:
    from pymilvus import MilvusClient, MilvusException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the Milvus gallery store needs pymilvus: pip install 'sona-reid[milvus]'"
    ) from exc

from ..base import (
    ITEM_ID,
    CropMissingError,
    GalleryStore,
    GroupBy,
    Hit,
    Item,
    NewItem,
    SearchFilter,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreRefusedError,
    StoreUnavailableError,
)
from ..crops import CropStore, LocalCropStore, crop_key
from ..durable import is_full
from ..ranking import Candidate, top_k
from . import lite
from .collection import CONSISTENCY_LEVELS, META_FIELDS, TEXT_MAX, open_collection, refused
from .expressions import filter_expression, literal, string_list

__all__ = ["MAX_TOPK", "TEXT_MAX", "MilvusStore", "MilvusUnavailableError"]

log = logging.getLogger(__name__)

#: Milvus refuses a search for more than this many results (its default topK limit).
MAX_TOPK = 16384
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
_LABEL_FIELDS = {"identity": "identity", "track": "track_id"}
_SCAN_BATCH = 4096
_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")


class MilvusUnavailableError(StoreUnavailableError):
    """Milvus failed or could not be reached: the request itself was fine (not a StoreError)."""


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
        identity=e.get("identity") or None,
        track_id=e.get("track_id") or None,
    )


#: Seconds that opening (creating, indexing and loading) the collection may take.
OPEN_TIMEOUT_S = 120.0

#: A filtered search on an approximate index (HNSW, IVF_FLAT) scores the items that pass
#: exactly when there are at most this many: camera and time filters stay exact where an ANN
#: index would miss items the filter lets through. Fetching their vectors costs time in
#: proportion to their number (bench/RESULTS.md); past this many the index answers.
EXACT_FILTERED_MAX = 2_000

#: Seconds after a delete during which a Session replica reads at Strong: Milvus's time tick
#: (200 ms by default) has carried the delete well before, even on a loaded server.
STRONG_AFTER_DELETE_S = 5.0


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

    max_text_bytes = TEXT_MAX  # VARCHAR fields have a byte length

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
        consistency: str = "Session",
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
        self.lite = lite.is_lite(uri)
        self.collection = f"{collection_prefix}items"
        self.timeout = timeout
        if consistency not in CONSISTENCY_LEVELS:
            raise StoreError(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}"
            )
        self.consistency = consistency
        self._strong_until = 0.0  # monotonic time until which reads ask for Strong
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
            lite.quiet_iterators()
            self._write_lock = lite.acquire(self._lite_path)
        try:
            self._client = self._connect(uri, token)
            try:
                with self._errors("open"):
                    self.index_type = open_collection(
                        self._client,
                        self.collection,
                        self.dim,
                        requested,
                        # creating and loading a collection is a start-up cost, not a request's
                        max(self.timeout, OPEN_TIMEOUT_S),
                        consistency,
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    self._client.close()
                raise
        except BaseException:
            if self._lite_path is not None:
                lite.release(self._lite_path)
            raise
        self._closed = False

    # ---------------------------------------------------------------- opening

    def _connect(self, uri: str, token: str | None) -> MilvusClient:
        try:
            options: dict[str, Any] = {}
            if self.lite:  # its server refuses pymilvus's 10 s idle pings ("too many pings"),
                # closing a connection idle for half a minute: ping only during calls
                options = {"grpc.keepalive_permit_without_calls": False}
            return MilvusClient(
                uri=uri, token=token or "", timeout=self.timeout, grpc_options=options
            )
        except MilvusException as e:
            if self.lite:
                if "milvus-lite is required" in str(e) or "milvus_lite" in str(e):
                    raise StoreError(
                        f"{self.uri} is a Milvus Lite database: pip install milvus-lite"
                    ) from e
                raise StoreLockedError(
                    f"cannot open Milvus Lite at {self.uri}: is it open in another process "
                    f"(a running service)? ({e.message})"
                ) from e
            raise MilvusUnavailableError(f"cannot connect to Milvus at {self.uri}: {e}") from e

    # ---------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Milvus errors as store errors: disk full, or Milvus unavailable (not the caller's)."""
        try:
            yield
        except (StoreError, MilvusUnavailableError):
            raise
        except MilvusException as e:
            if is_full(e):
                raise StoreFullError(f"Milvus is out of space ({what}): {e}") from e
            if self._closed:
                raise StoreError("the store is closed") from e
            if refused(e):
                raise StoreRefusedError(f"Milvus refused the {what}: {e.message}") from e
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

    def _read_level(self) -> str:
        """The level a read asks for: the store's, or Strong just after this replica deleted."""
        if self.consistency == "Session" and time.monotonic() < self._strong_until:
            return "Strong"
        return self.consistency

    def _deleted(self) -> None:
        self._strong_until = time.monotonic() + STRONG_AFTER_DELETE_S

    def _query(self, expr: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"limit": limit} if limit is not None else {}
        with self._errors("query"):
            return self._client.query(
                self.collection,
                filter=expr,
                output_fields=fields,
                consistency_level=self._read_level(),
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
        if not isinstance(item_id, str) or not ITEM_ID.fullmatch(item_id):
            return None  # not an id this store gives out: no such item
        self._check_open()
        rows = self._query(f"item_id == {literal(item_id)}", fields, limit=1)
        return rows[0] if rows else None

    def _next_seqs(self, n: int) -> list[int]:
        """Increasing acknowledgement numbers (ns clock, never repeating in this process)."""
        with self._seq_lock:
            base = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = base + n - 1
        return list(range(base, base + n))

    # ---------------------------------------------------------------- writes

    def _galleries_of(self, item_ids: list[str]) -> dict[str, str]:
        self._check_open()
        found: dict[str, str] = {}
        for start in range(0, len(item_ids), 1000):
            part = item_ids[start : start + 1000]
            for row in self._query(f"item_id in {string_list(part)}", ["item_id", "gallery"]):
                found[row["item_id"]] = row["gallery"]
        return found

    def _write(
        self,
        gallery: str,
        items: list[NewItem],
        x: np.ndarray,
        ids: list[str],
        created: list[datetime],
    ) -> list[Item]:
        self._check_open()
        seqs = self._next_seqs(len(items))
        keys = [crop_key(gallery, i, it.image_type) for i, it in zip(ids, items, strict=True)]
        self.crops.put_many(keys, [bytes(it.image) for it in items])
        rows = [
            {
                "item_id": ids[n],
                "gallery": gallery,
                "embedding": x[n],
                "camera_id": it.camera_id,
                "ts": it.timestamp.timestamp(),
                "timestamp": it.timestamp.isoformat(),
                "identity": it.identity or "",
                "track_id": it.track_id or "",
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
                    self.collection, filter=f"item_id in {string_list(ids)}", timeout=self.timeout
                )
                self._deleted()
            for key in keys:
                with contextlib.suppress(Exception):
                    self.crops.delete(key)
            raise
        return [it.stored(ids[n], gallery, created[n]) for n, it in enumerate(items)]

    def _delete(self, item_id: str) -> bool:
        row = self._by_id(item_id, ["item_id", "crop_key"])
        if row is None:
            return False
        with self._errors("delete"), self._write_lock:
            self._client.delete(
                self.collection, filter=f"item_id == {literal(item_id)}", timeout=self.timeout
            )
            self._deleted()
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
            ids = sorted({candidates[k] for k in part if ITEM_ID.fullmatch(candidates[k])})
            held = set()
            if ids:
                rows = self._query(f"item_id in {string_list(ids)}", ["crop_key"])
                held = {r["crop_key"] for r in rows}
            for key in part:
                if key not in held:
                    self.crops.delete(key)
                    removed += 1
        if removed:
            log.info("removed %d orphan crops", removed)
        return removed

    # ---------------------------------------------------------------- reads

    def _get(self, item_id: str) -> Item | None:
        row = self._by_id(item_id, META_FIELDS)
        return None if row is None else _item(row)

    def _get_embedding(self, item_id: str) -> np.ndarray | None:
        row = self._by_id(item_id, ["embedding"])
        return None if row is None else np.asarray(row["embedding"], dtype=np.float32)

    def _get_image(self, item_id: str) -> tuple[bytes, str] | None:
        row = self._by_id(item_id, ["crop_key", "image_type"])
        if row is None:
            return None
        data = self.crops.get(row["crop_key"])
        if data is None:
            log.error(
                "item %s: its crop %s is missing from the crop store", item_id, row["crop_key"]
            )
            raise CropMissingError(f"the crop of item {item_id} is missing on the server")
        return data, row["image_type"]

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per gallery and camera: a scan of two short fields of every row, O(n)."""
        self._check_open()
        out: dict[str, dict[str, int]] = {}
        for rows in self._scan("", ["gallery", "camera_id"], batch=MAX_TOPK):
            for r in rows:
                cams = out.setdefault(r["gallery"], {})
                cams[r["camera_id"]] = cams.get(r["camera_id"], 0) + 1
        return {g: dict(sorted(c.items())) for g, c in sorted(out.items())}

    def _count(self, gallery: str | None) -> int:
        """Items in ``gallery``, or in all galleries (Milvus counts; no scan)."""
        self._check_open()
        expr = "" if gallery is None else f"gallery == {literal(gallery)}"
        rows = self._query(expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _track(self, gallery: str, track_id: str, limit: int) -> list[tuple[Item, np.ndarray]]:
        """The track's rows (a filtered query; a track holds a few crops), sorted here."""
        self._check_open()
        expr = f"gallery == {literal(gallery)} and track_id == {literal(track_id)}"
        rows = [r for batch in self._scan(expr, [*META_FIELDS, "ts", "embedding"]) for r in batch]
        rows.sort(key=lambda r: (float(r["ts"]), int(r["seq"]), str(r["item_id"])))
        return [(_item(r), np.asarray(r["embedding"], dtype=np.float32)) for r in rows[:limit]]

    def _iter_items(self, gallery: str, batch: int) -> Iterator[list[tuple[Item, np.ndarray]]]:
        """Lists (seq, id) of the whole gallery first (a scan of two small fields), then
        fetches the rows a batch at a time."""
        self._check_open()
        order = sorted(
            (int(r["seq"]), r["item_id"])
            for rows in self._scan(f"gallery == {literal(gallery)}", ["item_id", "seq"])
            for r in rows
        )
        for start in range(0, len(order), batch):
            ids = [i for _, i in order[start : start + batch]]
            rows = self._query(f"item_id in {string_list(ids)}", [*META_FIELDS, "embedding"])
            found = {r["item_id"]: r for r in rows}
            yield [
                (_item(r), np.asarray(r["embedding"], dtype=np.float32))
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
                output_fields=META_FIELDS,
                search_params=self._search_params(limit),
                consistency_level=self._read_level(),
                timeout=self.timeout,
            )
        rows = [_Row(float(h["distance"]), dict(h["entity"])) for h in result[0]]
        rows.sort(key=lambda r: r.key)
        return rows, len(rows) < limit

    def _exact(self, expr: str, q: np.ndarray) -> list[_Row]:
        """Every row passing ``expr``, scored exactly here: searches past Milvus's top-k limit."""
        out: list[_Row] = []
        for rows in self._scan(expr, [*META_FIELDS, "embedding"]):
            out.extend(self._scored(rows, q))
        out.sort(key=lambda r: r.key)
        return out

    @staticmethod
    def _scored(rows: list[dict], q: np.ndarray) -> list[_Row]:
        """Rows with their embeddings scored against ``q`` (the embeddings dropped), sorted."""
        if not rows:
            return []
        x = np.asarray([r.pop("embedding") for r in rows], dtype=np.float32)
        scored = [_Row(float(s), r) for s, r in zip((x @ q).tolist(), rows, strict=True)]
        scored.sort(key=lambda r: r.key)
        return scored

    def _filtered_exactly(self, where: SearchFilter, expr: str, q: np.ndarray) -> list[_Row] | None:
        """A camera or time filter on an approximate index that passes at most
        ``EXACT_FILTERED_MAX`` items: those items, scored exactly (one count, one query)."""
        filtered = (
            where.cameras is not None
            or bool(where.exclude_cameras)
            or where.since is not None
            or where.until is not None
        )
        if self.index_type == "FLAT" or not filtered:
            return None
        rows = self._query(expr, ["count(*)"])
        if (int(rows[0]["count(*)"]) if rows else 0) > EXACT_FILTERED_MAX:
            return None
        rows = self._query(expr, [*META_FIELDS, "embedding"], limit=EXACT_FILTERED_MAX)
        return self._scored(rows, q)

    def _search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
    ) -> list[Hit]:
        self._check_open()
        expr = filter_expression(gallery, where)
        if expr is None:
            return []
        label = _LABEL_FIELDS[group_by] if group_by else None
        exact = self._filtered_exactly(where, expr, query)

        def fetch(window: int) -> tuple[list[Candidate], bool]:
            if exact is not None:
                rows, exhausted = exact[:window], window >= len(exact)
            else:
                rows, exhausted = self._candidates(expr, query, window)
            return [
                Candidate(
                    r.score,
                    r.entity["item_id"],
                    (r.entity.get(label) or None) if label else None,
                    r,
                )
                for r in rows
            ], exhausted

        chosen = top_k(fetch, k, label is not None)
        return [Hit(item=_item(c.payload.entity), score=c.score) for c in chosen]

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
            lite.release(self._lite_path)
