"""The Milvus store's search: Milvus ranks candidates, ``ranking.top_k`` cuts them.

Ranking and grouping go through ``ranking.top_k``, as on the FAISS store: candidates sorted by
score, then ``seq``, then id, so a tie at the cut is never split arbitrarily, and ``group_by``
returns k groups whenever k exist. Milvus's own ``group_by_field`` is not used: it
would merge all unlabelled items into one group, and Milvus Lite's grouping over-fetches only
10 x k, so it can return fewer groups than exist. Past ``MAX_TOPK`` candidates (Milvus's limit
on k) the search scans the filtered items and ranks them exactly in numpy.

A camera or time filter that passes at most ``EXACT_FILTERED_MAX`` items is scored exactly
here (those items' vectors fetched in one query). A wider one goes to Milvus with the search,
which applies it as a bitset inside the vector index. An approximate index walks its graph
(HNSW) or lists (IVF) past the items the filter removes, so a search that keeps its ``ef`` /
``nprobe`` finds fewer of the passing items the fewer there are; the search raises them by
the inverse of the share that passes (the gallery's size cached for a few seconds), up to
``EF_MAX`` / ``NPROBE_MAX``. Recent inserts sit in growing segments, which Milvus 2.3.5
searches through an interim index whose parameters ``ef`` does not reach: there a narrow
filter misses many of the passing items, until the segments are sealed and indexed (figures:
bench/search.py, bench/RESULTS.md). Once every row is in an indexed sealed segment (after a
bulk import's seal, or once Milvus sealed a quiet gallery's segments) an HNSW collection
sends the narrow filters to the index too: measured there, it finds the exact top 10 (Milvus
searches what passes by brute force at such filter ratios), without fetching any vector.

On a collection of day partitions the store hands each search the partitions to name: the
gallery's, of the days a time window meets (``Partitions.read``); the gallery's expression
stays in the filter.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import GroupBy, Hit, SearchFilter, UnknownGalleryError
from ..ranking import Candidate, top_k
from .connection import MilvusConnection
from .expressions import filter_expression, literal
from .rows import item_of

__all__ = ["EF_MAX", "EF_SEARCH", "EXACT_FILTERED_MAX", "MAX_TOPK", "NPROBE_MAX", "Searcher"]

#: Milvus refuses a search for more than this many results (its default topK limit).
MAX_TOPK = 16384

#: A filtered search on an approximate index (HNSW, IVF_FLAT) scores the items that pass
#: exactly when there are at most this many: on growing segments Milvus's filtered search
#: misses many of the passing items (bench/RESULTS.md). Fetching their vectors costs time in
#: proportion to their number; past this many the index answers.
EXACT_FILTERED_MAX = 2_000
#: HNSW's ``ef`` for a search without a camera or time filter (raised to the results asked
#: for). Milvus searches every sealed segment with it and merges their best, so a search
#: costs about ef x segments: at 100,000 and 1,000,000 sealed items, 32 kept recall@10 above
#: 0.95 in about half the time of 128 (bench/search.py ``--milvus-ef``, bench/RESULTS.md).
EF_SEARCH = 32
#: The most a filter raises HNSW's ``ef`` to (Milvus accepts up to 32768; the cost grows with it).
EF_MAX = 4096
#: The most a filter raises IVF's ``nprobe`` to: every list of the store's IVF_FLAT (nlist 1024).
NPROBE_MAX = 1024
#: How long a replica trusts its look at whether every row is indexed and sealed: an insert
#: since (another replica's) is searched at the growing segments' recall for that long.
SEALED_TTL_S = 5.0
#: How long a gallery's size is reused to judge a filter's share (a share, not a count: a few
#: seconds old is near enough).
SIZE_TTL_S = 10.0

_LABEL_FIELDS = {"identity": "identity", "track": "track_id"}


@dataclass
class _Row:
    score: float
    entity: dict[str, Any]

    @property
    def key(self) -> tuple[float, int, str]:
        return (-self.score, int(self.entity["seq"]), str(self.entity["item_id"]))


def _scored(rows: list[dict], q: np.ndarray) -> list[_Row]:
    """Rows with their embeddings scored against ``q`` (the embeddings dropped), sorted."""
    if not rows:
        return []
    x = np.asarray([r.pop("embedding") for r in rows], dtype=np.float32)
    scored = [_Row(float(s), r) for s, r in zip((x @ q).tolist(), rows, strict=True)]
    scored.sort(key=lambda r: r.key)
    return scored


class Searcher:
    """Searches one collection with its vector index's parameters; ``fields``: what an
    item's metadata is read from."""

    def __init__(
        self,
        conn: MilvusConnection,
        fields: list[str],
        index_type: str,
        ef_search: int,
        nprobe: int,
    ) -> None:
        self.conn = conn
        self.fields = fields  # an item's metadata
        self.index_type = index_type
        self.ef_search = ef_search
        self.nprobe = nprobe

        self._sizes: dict[str, tuple[float, int]] = {}  # gallery: (monotonic time, items)
        self._sealed: tuple[float, bool] = (-SEALED_TTL_S, False)  # (monotonic time, sealed)
        self._sizes_lock = threading.Lock()

    def params(self, limit: int, widen: float = 1.0) -> dict[str, Any]:
        """Search parameters for ``limit`` results; ``widen``: 1 / the share a filter passes."""
        if self.index_type == "HNSW":
            ef = max(self.ef_search, limit)
            return {"metric_type": "IP", "params": {"ef": max(limit, min(EF_MAX, _up(ef, widen)))}}
        if self.index_type == "IVF_FLAT":
            nprobe = min(NPROBE_MAX, _up(self.nprobe, widen))
            return {"metric_type": "IP", "params": {"nprobe": max(self.nprobe, nprobe)}}
        return {"metric_type": "IP", "params": {}}

    def _size(self, gallery: str) -> int:
        now = time.monotonic()
        with self._sizes_lock:
            held = self._sizes.get(gallery)
        if held is not None and now - held[0] < SIZE_TTL_S:
            return held[1]
        size = self.conn.count(f"gallery == {literal(gallery)}", strong=False)
        with self._sizes_lock:
            if len(self._sizes) > 1024:
                self._sizes.clear()
            self._sizes[gallery] = (now, size)
        return size

    def sealed(self) -> bool:
        """Whether every row of the collection sits in an indexed sealed segment (as after a
        bulk import's seal): then Milvus's filtered index search finds the exact neighbours
        (brute force over what passes, at high filter ratios), and the service need not fetch
        vectors to be exact. Looked at again after ``SEALED_TTL_S``; False if Milvus cannot say."""
        now = time.monotonic()
        with self._sizes_lock:
            at, sealed = self._sealed
        if now - at < SEALED_TTL_S:
            return sealed
        try:
            total = self.conn.count("", strong=False)
            sealed = total > 0 and self.conn.indexed_rows() >= total
        except Exception:  # Milvus Lite has no segments to list; a server may refuse it
            sealed = False
        with self._sizes_lock:
            self._sealed = (now, sealed)
        return sealed

    def _filtered(
        self, gallery: str, where: SearchFilter, expr: str, q: np.ndarray, parts: list[str] | None
    ) -> tuple[float, list[_Row] | None]:
        """For a camera or time filter on an approximate index: 1 / the share of the gallery
        it passes, and when at most ``EXACT_FILTERED_MAX`` pass, those items scored exactly
        (one count, then one query). (1.0, None) without such a filter or on FLAT."""
        filtered = (
            where.cameras is not None
            or bool(where.exclude_cameras)
            or where.since is not None
            or where.until is not None
        )
        if self.index_type not in ("HNSW", "IVF_FLAT") or not filtered:
            return 1.0, None
        passing = self.conn.count(expr, strong=False, partitions=parts)  # deletes: a few too many
        if passing <= EXACT_FILTERED_MAX and not (self.index_type == "HNSW" and self.sealed()):
            fields = [*self.fields, "embedding"]
            rows = self.conn.query(
                expr, fields, limit=EXACT_FILTERED_MAX, strong=False, partitions=parts
            )
            return 1.0, _scored(self.conn.visible(rows, lambda r: r["item_id"]), q)
        return max(1.0, self._size(gallery) / passing), None

    def _candidates(
        self,
        expr: str,
        q: np.ndarray,
        limit: int,
        widen: float = 1.0,
        parts: list[str] | None = None,
    ) -> tuple[list[_Row], bool]:
        """The best ``limit`` rows passing ``expr``, sorted; True when no more exist."""
        if limit > MAX_TOPK:
            return self._exact(expr, q, parts), True
        params = self.params(limit, widen)
        hits = self.conn.search(q, limit, expr, self.fields, params, parts)
        exhausted = len(hits) < limit
        hits = self.conn.visible(hits, lambda h: h["entity"]["item_id"])
        rows = [_Row(float(h["distance"]), dict(h["entity"])) for h in hits]
        rows.sort(key=lambda r: r.key)
        return rows, exhausted

    def _exact(self, expr: str, q: np.ndarray, parts: list[str] | None = None) -> list[_Row]:
        """Every row passing ``expr``, scored exactly here: searches past Milvus's top-k limit."""
        out: list[_Row] = []
        for rows in self.conn.scan(expr, [*self.fields, "embedding"], partitions=parts):
            out.extend(_scored(self.conn.visible(rows, lambda r: r["item_id"]), q))
        out.sort(key=lambda r: r.key)
        return out

    def search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
        parts: list[str] | None,
    ) -> list[Hit]:
        """The top ``k`` of ``gallery`` on the partitions ``parts`` (None: every loaded one)."""
        expr = filter_expression(gallery, where)
        if expr is None:
            self._check_exists(gallery)
            return []
        label = _LABEL_FIELDS[group_by] if group_by else None
        widen, exact = self._filtered(gallery, where, expr, query, parts)

        def fetch(window: int) -> tuple[list[Candidate], bool]:
            if exact is not None:
                rows, exhausted = exact[:window], window >= len(exact)
            else:
                rows, exhausted = self._candidates(expr, query, window, widen, parts)
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
        if not chosen:
            self._check_exists(gallery)
        return [Hit(item=item_of(c.payload.entity), score=c.score) for c in chosen]

    def _check_exists(self, gallery: str) -> None:
        """After an empty answer only: one count tells an unknown gallery from a filter."""
        if not self.conn.count(f"gallery == {literal(gallery)}"):
            raise UnknownGalleryError(f"gallery {gallery!r} does not exist (it has no items)")


def _up(value: int, factor: float) -> int:
    return math.ceil(value * factor)
