"""The Milvus store's search: Milvus ranks candidates, ``ranking.top_k`` cuts them.

Ranking and grouping go through ``ranking.top_k``, as on the FAISS store: candidates sorted by
score, then ``seq``, then id, so a tie at the cut is never split arbitrarily, and ``group_by``
returns k groups whenever k exist. Milvus's own ``group_by_field`` is not used: it
would merge all unlabelled items into one group, and Milvus Lite's grouping over-fetches only
10 x k, so it can return fewer groups than exist. Past ``MAX_TOPK`` candidates (Milvus's limit
on k) the search scans the filtered items and ranks them exactly in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import GroupBy, Hit, SearchFilter, UnknownGalleryError
from ..ranking import Candidate, top_k
from .connection import MilvusConnection
from .expressions import filter_expression, literal
from .rows import item_of

__all__ = ["EXACT_FILTERED_MAX", "MAX_TOPK", "Searcher"]

#: Milvus refuses a search for more than this many results (its default topK limit).
MAX_TOPK = 16384

#: A filtered search on an approximate index (HNSW, IVF_FLAT) scores the items that pass
#: exactly when there are at most this many: camera and time filters stay exact where an ANN
#: index would miss items the filter lets through. Fetching their vectors costs time in
#: proportion to their number (bench/RESULTS.md); past this many the index answers.
EXACT_FILTERED_MAX = 2_000

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

    def params(self, limit: int) -> dict[str, Any]:
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(self.ef_search, limit)}}
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": self.nprobe}}
        return {"metric_type": "IP", "params": {}}

    def _candidates(self, expr: str, q: np.ndarray, limit: int) -> tuple[list[_Row], bool]:
        """The best ``limit`` rows passing ``expr``, sorted; True when no more exist."""
        if limit > MAX_TOPK:
            return self._exact(expr, q), True
        hits = self.conn.search(q, limit, expr, self.fields, self.params(limit))
        rows = [_Row(float(h["distance"]), dict(h["entity"])) for h in hits]
        rows.sort(key=lambda r: r.key)
        return rows, len(rows) < limit

    def _exact(self, expr: str, q: np.ndarray) -> list[_Row]:
        """Every row passing ``expr``, scored exactly here: searches past Milvus's top-k limit."""
        out: list[_Row] = []
        for rows in self.conn.scan(expr, [*self.fields, "embedding"]):
            out.extend(_scored(rows, q))
        out.sort(key=lambda r: r.key)
        return out

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
        if self.conn.count(expr) > EXACT_FILTERED_MAX:
            return None
        rows = self.conn.query(expr, [*self.fields, "embedding"], limit=EXACT_FILTERED_MAX)
        return _scored(rows, q)

    def search(
        self,
        gallery: str,
        query: np.ndarray,
        k: int,
        where: SearchFilter,
        group_by: GroupBy | None,
    ) -> list[Hit]:
        self.conn.check_open()
        expr = filter_expression(gallery, where)
        if expr is None:
            self._check_exists(gallery)
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
        if not chosen:
            self._check_exists(gallery)
        return [Hit(item=item_of(c.payload.entity), score=c.score) for c in chosen]

    def _check_exists(self, gallery: str) -> None:
        """After an empty answer only: one count tells an unknown gallery from a filter."""
        if not self.conn.count(f"gallery == {literal(gallery)}"):
            raise UnknownGalleryError(f"gallery {gallery!r} does not exist (it has no items)")
