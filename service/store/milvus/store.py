"""The scale-out gallery store: Milvus holds vectors and metadata, a shared folder the crops.

Several service replicas open a ``MilvusStore`` on the same Milvus and the same crop folder
and behave as one gallery: what one acknowledges, the next search on any other one sees.

Layout. One collection, ``<prefix>items``, for every gallery, rather than a collection per
gallery: galleries are created implicitly by the first ``POST /gallery?gallery=NAME``, and a
Milvus collection is heavy to create (shards, index, load, a cluster-wide cap on their number)
and racy to create from several replicas at once; gallery names may hold '-', which collection
names may not; and ``get``/``delete`` by item id need no gallery. Each gallery's items of one
UTC day go to a partition of their own (``partitions.py``): a search names only its gallery's
partitions (of the days its time window meets), and retention or erasure of whole days drops
partitions instead of deleting item by item; their crops lie in a folder per gallery and day
(``day_crop_key``), removed whole. A collection made before day partitions (``gallery`` its
partition key) opens as it is and deletes item by item. Fields::

    item_id     VARCHAR(64), primary key   uuid4 hex, chosen by the store (or kept on import)
    gallery     VARCHAR(64)                (the partition key of older collections)
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

Consistency levels: ``connection.py``. Ranking and grouping: ``search.py``.

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
on open: another replica may be between those two steps right then). A day's removal drops
its partition first, then its crop folder (the crops written before the drop began): a kill
between leaves orphan crops, never an item without its crop.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np

try:
    from pymilvus import MilvusException  # noqa: F401 - fails early without pymilvus
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
    Selection,
    StoreError,
    StoreRefusedError,
    TrackSummary,
)
from ..crops import CropStore, LocalCropStore, crop_key, day_crop_key
from . import lite
from .collection import (
    CONSISTENCY_LEVELS,
    META_FIELDS,
    PROVENANCE_FIELDS,
    TEXT_MAX,
    open_collection,
)
from .connection import MilvusConnection, MilvusUnavailableError
from .expressions import literal, string_list
from .partitions import Partitions, day_of, partition_name, stale
from .removal import Remover
from .rows import item_of, row_of
from .search import EF_SEARCH, MAX_TOPK, Searcher

__all__ = ["MAX_TOPK", "TEXT_MAX", "MilvusStore", "MilvusUnavailableError"]


def _item_id(row: dict) -> str:
    return row["item_id"]


log = logging.getLogger(__name__)
T = TypeVar("T")

#: A bulk import into a server: rows per insert (2,000 x 1536-d is 12 MiB, well inside
#: Milvus's 64 MiB message limit) and inserts in flight (bench/transfer.py measures them).
IMPORT_BATCH = 2000
IMPORT_WORKERS = 4

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")

#: Seconds that opening (creating, indexing and loading) the collection may take.
OPEN_TIMEOUT_S = 120.0


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
        ef_search: int = EF_SEARCH,
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
        self.collection = f"{collection_prefix}items"
        self.timeout = timeout
        if consistency not in CONSISTENCY_LEVELS:
            raise StoreError(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}"
            )
        self.consistency = consistency
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        is_lite = lite.is_lite(uri)
        requested = (index or ("FLAT" if is_lite else "HNSW")).upper()
        if requested not in _INDEXES:
            raise StoreError(f"index must be one of {', '.join(_INDEXES)}, not {index!r}")

        if crops is None:
            if not is_lite:
                raise StoreError("crops: give a directory every replica mounts (SONA_CROPS_DIR)")
            crops = Path(uri).with_name(Path(uri).stem + "-crops")
        self.crops = crops if isinstance(crops, CropStore) else LocalCropStore(crops)

        self.conn = MilvusConnection(uri, token, self.collection, timeout, consistency)
        self.lite = self.conn.lite
        try:
            with self.conn.errors("open"):
                opened = open_collection(
                    self.conn.client,
                    self.collection,
                    self.dim,
                    requested,
                    # creating and loading a collection is a start-up cost, not a request's
                    max(self.timeout, OPEN_TIMEOUT_S),
                    consistency,
                )
        except BaseException:
            self.conn.close()
            raise
        self.index_type = opened.index_type
        if not self.lite:  # a server takes several large inserts at once
            self.import_batch, self.import_workers = IMPORT_BATCH, IMPORT_WORKERS
        #: The collection stores provenance (one made before it does not, and refuses it).
        self.provenance = opened.provenance
        self.fields = [*META_FIELDS, *(PROVENANCE_FIELDS if self.provenance else ())]
        #: The day partitions; None on a collection with ``gallery`` as its partition key.
        self.parts = Partitions(self.conn) if opened.day_partitions else None
        self.searcher = Searcher(
            self.conn,
            self.fields,
            self.index_type,
            max(1, int(ef_search)),
            max(1, int(nprobe)),
        )
        self.remover = Remover(self.conn, self.crops, self.parts)

    @property
    def ef_search(self) -> int:
        return self.searcher.ef_search

    @property
    def nprobe(self) -> int:
        return self.searcher.nprobe

    @property
    def day_partitions(self) -> bool:
        """Whether a gallery's days are partitions (False: an older collection)."""
        return self.parts is not None

    def _read(
        self,
        gallery: str,
        read: Callable[[list[str] | None], T],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> T:
        """``read(partitions)`` on the gallery's partitions (None on an older collection)."""
        if self.parts is None:
            return read(None)
        return self.parts.read(gallery, read, since, until)

    def _next_seqs(self, n: int) -> list[int]:
        """Increasing acknowledgement numbers (ns clock, never repeating in this process)."""
        with self._seq_lock:
            base = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = base + n - 1
        return list(range(base, base + n))

    # ---------------------------------------------------------------- writes

    def _galleries_of(self, item_ids: list[str]) -> dict[str, str]:
        """Which ids are stored: what makes an import resumable, so it reads at Strong until
        this replica's first insert (from then on Session waits for that insert, and every
        write before it, another process's included)."""
        self.conn.check_open()
        level = None if self.conn.wrote else "Strong"
        found: dict[str, str] = {}
        for start in range(0, len(item_ids), 1000):
            part = item_ids[start : start + 1000]
            expr = f"item_id in {string_list(part)}"
            for row in self.conn.query(expr, ["item_id", "gallery"], level=level):
                found[row["item_id"]] = row["gallery"]
        return found

    def seal(self, timeout: float = 600.0) -> bool:
        """Flush the collection (its growing segments sealed), then wait until the query
        nodes serve every row from an indexed sealed segment. Growing segments are searched
        through an interim index that the search's ``ef`` does not reach: right after a bulk
        import, filtered searches there find about half the true neighbours
        (bench/RESULTS.md). Milvus Lite has nothing to seal."""
        self.conn.check_open()
        if self.lite:
            return True
        # the rows to wait for: those written before the flush (other replicas' later inserts
        # go to new growing segments, which this wait leaves to Milvus)
        total = self.conn.count("", strong=False)
        with self.conn.errors("flush"):
            self.conn.client.flush(self.collection, timeout=max(self.timeout, timeout))
        deadline = time.monotonic() + timeout
        while True:
            indexed = self.conn.indexed_rows()
            if indexed >= total:
                return True
            if time.monotonic() > deadline:
                log.warning(
                    "collection %s: %d of %d rows indexed after %.0f s; searches on the rest "
                    "run at lower recall until Milvus indexes them",
                    self.collection,
                    indexed,
                    total,
                    timeout,
                )
                return False
            time.sleep(1.0)

    def _write(
        self,
        gallery: str,
        items: list[NewItem],
        x: np.ndarray,
        ids: list[str],
        created: list[datetime],
    ) -> list[Item]:
        self.conn.check_open()
        if not self.provenance and any(
            it.source is not None or it.frame is not None or it.box is not None for it in items
        ):
            raise StoreRefusedError(
                f"collection {self.collection} was made before provenance (source, frame, box) "
                "and Milvus cannot add fields to it: export the galleries and import them under "
                "a new collection prefix, or add the items without provenance"
            )
        seqs = self._next_seqs(len(items))
        groups: dict[str | None, list[int]] = {}
        if self.parts is None:
            keys = [crop_key(gallery, i, it.image_type) for i, it in zip(ids, items, strict=True)]
            groups[None] = list(range(len(items)))
        else:
            days = [day_of(it.timestamp) for it in items]
            self.parts.ensure(gallery, days)  # before the crops: see _drop_day
            keys = [
                day_crop_key(gallery, days[n], ids[n], it.image_type) for n, it in enumerate(items)
            ]
            for n, day in enumerate(days):
                groups.setdefault(partition_name(gallery, day), []).append(n)
        self.crops.put_many(keys, [bytes(it.image) for it in items])
        rows = [
            row_of(it, ids[n], gallery, x[n], keys[n], created[n], seqs[n], self.provenance)
            for n, it in enumerate(items)
        ]
        try:
            for partition, members in groups.items():
                self.conn.insert([rows[n] for n in members], partition)
        except BaseException as e:
            if self.parts is not None and stale(e):
                self.parts.invalidate()  # a day dropped meanwhile: the next add makes it anew
            # all or none: take back whatever part of the batch Milvus may have kept
            with contextlib.suppress(Exception):
                self.conn.delete(ids)
            for key in keys:
                with contextlib.suppress(Exception):
                    self.crops.delete(key)
            raise
        return [it.stored(ids[n], gallery, created[n]) for n, it in enumerate(items)]

    def _delete(self, item_id: str) -> bool:
        row = self.conn.by_id(item_id, ["item_id", "crop_key"])
        if row is None:
            return False
        self.conn.delete([item_id])
        self.crops.delete(row["crop_key"])  # if lost in a crash: an orphan, swept later
        return True

    def _remove_batch(self, sel: Selection, limit: int) -> int:
        if sel.gallery is None:
            return self.remover.rows(sel, limit, None)
        return self._read(
            sel.gallery, lambda parts: self.remover.rows(sel, limit, parts), sel.since, sel.before
        )

    def _remove_all(self, sel: Selection, batch: int) -> int:
        """On day partitions, whole days are partition drops (``removal.py``)."""
        if self.parts is None or sel.track_id is not None:
            return super()._remove_all(sel, batch)
        return self.remover.days(self.parts, sel, batch)

    def remove_orphan_crops(self, min_age_s: float = 3600.0) -> int:
        """Delete crops older than ``min_age_s`` that no row references; returns how many.

        Leftovers of adds that crashed between the crop and the insert. Younger crops are left
        alone: another replica may be between those two steps right now.
        """
        self.conn.check_open()
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
                rows = self.conn.query(f"item_id in {string_list(ids)}", ["crop_key"])
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
        row = self.conn.by_id(item_id, self.fields)
        return None if row is None else item_of(row)

    def _get_embedding(self, item_id: str) -> np.ndarray | None:
        row = self.conn.by_id(item_id, ["embedding"])
        return None if row is None else np.asarray(row["embedding"], dtype=np.float32)

    def _get_with_embedding(self, item_id: str) -> tuple[Item, np.ndarray] | None:
        row = self.conn.by_id(item_id, [*self.fields, "embedding"])
        if row is None:
            return None
        return item_of(row), np.asarray(row["embedding"], dtype=np.float32)

    def _get_image(self, item_id: str) -> tuple[bytes, str] | None:
        row = self.conn.by_id(item_id, ["crop_key", "image_type"])
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
        self.conn.check_open()
        out: dict[str, dict[str, int]] = {}
        for rows in self.conn.scan("", ["gallery", "camera_id"], batch=MAX_TOPK):
            for r in rows:
                cams = out.setdefault(r["gallery"], {})
                cams[r["camera_id"]] = cams.get(r["camera_id"], 0) + 1
        return {g: dict(sorted(c.items())) for g, c in sorted(out.items())}

    def _galleries(self) -> list[str]:
        """Day partitions: the listing, less galleries left empty (a count each). Otherwise a
        scan of one short field of every row: O(n), for sweeps rather than requests."""
        self.conn.check_open()
        if self.parts is not None:
            return [g for g in sorted(self.parts.listing(fresh=True)) if self._count(g)]
        names: set[str] = set()
        for rows in self.conn.scan("", ["gallery"], batch=MAX_TOPK):
            names.update(r["gallery"] for r in rows)
        return sorted(names)

    def _gallery_counts(self, gallery: str) -> dict[str, int]:
        """Items per camera of one gallery: a scan of its rows' camera field."""
        self.conn.check_open()

        def read(parts: list[str] | None) -> dict[str, int]:
            out: dict[str, int] = {}
            expr = f"gallery == {literal(gallery)}"
            for rows in self.conn.scan(expr, ["camera_id"], MAX_TOPK, partitions=parts):
                for r in rows:
                    out[r["camera_id"]] = out.get(r["camera_id"], 0) + 1
            return dict(sorted(out.items()))

        return self._read(gallery, read)

    def _track_summaries(self, gallery: str, camera_id: str | None) -> list[TrackSummary]:
        """A scan of the gallery's tracked rows (four short fields), aggregated here."""
        self.conn.check_open()
        expr = f'gallery == {literal(gallery)} and track_id != ""'
        if camera_id is not None:
            expr += f" and camera_id == {literal(camera_id)}"
        fields = ["track_id", "camera_id", "ts", "timestamp"]
        first: dict[str, tuple[float, str]] = {}
        last: dict[str, tuple[float, str, str]] = {}
        count: dict[str, int] = {}
        for rows in self._read(
            gallery, lambda parts: list(self.conn.scan(expr, fields, MAX_TOPK, partitions=parts))
        ):
            for r in rows:
                t, ts = r["track_id"], float(r["ts"])
                count[t] = count.get(t, 0) + 1
                if t not in first or ts < first[t][0]:
                    first[t] = (ts, r["timestamp"])
                if t not in last or ts > last[t][0]:
                    last[t] = (ts, r["timestamp"], r["camera_id"])
        return [
            TrackSummary(
                track_id=t,
                gallery=gallery,
                camera_id=last[t][2],
                first=datetime.fromisoformat(first[t][1]),
                last=datetime.fromisoformat(last[t][1]),
                count=n,
            )
            for t, n in count.items()
        ]

    def _count(self, gallery: str | None) -> int:
        """Items in ``gallery``, or in all galleries (Milvus counts; no scan)."""
        self.conn.check_open()
        if gallery is None:
            return self.conn.count("")
        expr = f"gallery == {literal(gallery)}"
        return self._read(gallery, lambda parts: self.conn.count(expr, partitions=parts))

    def _track(self, gallery: str, track_id: str, limit: int) -> list[tuple[Item, np.ndarray]]:
        """The track's rows (a filtered query; a track holds a few crops), sorted here."""
        self.conn.check_open()
        expr = f"gallery == {literal(gallery)} and track_id == {literal(track_id)}"
        fields = [*self.fields, "ts", "embedding"]
        rows = self.conn.visible(
            self._read(
                gallery,
                lambda parts: [
                    r for batch in self.conn.scan(expr, fields, partitions=parts) for r in batch
                ],
            ),
            _item_id,
        )
        rows.sort(key=lambda r: (float(r["ts"]), int(r["seq"]), str(r["item_id"])))
        return [(item_of(r), np.asarray(r["embedding"], dtype=np.float32)) for r in rows[:limit]]

    def _iter_items(self, gallery: str, batch: int) -> Iterator[list[tuple[Item, np.ndarray]]]:
        """Lists (seq, id) of the whole gallery first (a scan of two small fields), then
        fetches the rows a batch at a time."""
        self.conn.check_open()
        expr = f"gallery == {literal(gallery)}"
        order = sorted(
            self._read(
                gallery,
                lambda parts: [
                    (int(r["seq"]), r["item_id"])
                    for rows in self.conn.scan(expr, ["item_id", "seq"], partitions=parts)
                    for r in rows
                ],
            )
        )
        for start in range(0, len(order), batch):
            ids = [i for _, i in order[start : start + batch]]
            rows = self.conn.query(f"item_id in {string_list(ids)}", [*self.fields, "embedding"])
            found = {r["item_id"]: r for r in rows}
            yield [
                (item_of(r), np.asarray(r["embedding"], dtype=np.float32))
                for r in (found.get(i) for i in ids)
                if r is not None
            ]

    # ---------------------------------------------------------------- search

    def _search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
    ) -> list[Hit]:
        self.conn.check_open()
        return self._read(
            gallery,
            lambda parts: self.searcher.search(gallery, query, k, where, group_by, parts),
            where.since,
            where.until,
        )

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the connection (and a Milvus Lite server no other store uses); idempotent."""
        if self.conn.closed:
            return
        self.conn.close()
        self.crops.close()
