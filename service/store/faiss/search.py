"""How the FAISS store ranks a gallery: the search strategies, one function each.

Every strategy returns the best ``wanted`` allowed items (fewer only when fewer exist) as
(scores, rowids), best first, equal scores by rowid, with ``score`` the true cosine:

* flat index: FAISS with an ``IDSelector`` over the rowids SQLite allows (a bitmap when dense,
  else a hash set), or ``IDSelectorNot`` over the few it excludes: exact;
* ``auto`` past its threshold, without a camera or time filter: the candidate index proposes,
  the flat index re-scores (``candidates``), widening nprobe while it proposes too few;
* IVF,Flat under a filter: every list scanned through the selector (``every_list``): exact;
* other approximate kinds: filters leaving at most ``EXACT_LIMIT`` items are searched exactly
  from the stored embeddings (``exact``); otherwise ``REFINE`` x more candidates are fetched,
  widened (nprobe, efSearch) and, if still too few, the exact search is the safety net.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import faiss
import numpy as np

from .catalog import CHUNK, Catalog, ResolvedFilter
from .index import GalleryIndex

__all__ = ["EXACT_LIMIT", "REFINE", "exact", "ranked", "sorted_hits"]

log = logging.getLogger(__name__)

#: Approximate indexes search filters that leave at most this many items exactly.
EXACT_LIMIT = 4096
#: Approximate indexes fetch this many times the wanted candidates and re-rank them exactly.
REFINE = 2

Ranked = tuple[np.ndarray, np.ndarray]  # (scores, rowids), best first


def sorted_hits(scores: np.ndarray, ids: np.ndarray) -> Ranked:
    """Best first; equal scores by ascending rowid, so results are deterministic."""
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


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


def _selector(flt: ResolvedFilter) -> tuple[Any, list[Any]]:
    """The FAISS selector for a filter, and the objects that must outlive the search."""
    if flt.allowed is not None and len(flt.allowed):
        return _membership(flt.allowed)
    if flt.allowed is None and len(flt.negatives):
        inner, keep = _membership(flt.negatives)
        sel = faiss.IDSelectorNot(inner)
        return sel, [sel, *keep]
    return None, []


def ranked(
    catalog: Catalog,
    conn: sqlite3.Connection,
    gi: GalleryIndex,
    q: np.ndarray,
    wanted: int,
    flt: ResolvedFilter,
) -> Ranked:
    """The best ``wanted`` allowed items, by whichever strategy fits the index and filter."""
    want = min(wanted, flt.n_avail)
    if gi.ann is not None and flt.allowed is None:
        found = _candidates(gi, q, wanted, flt)
        if found is not None:
            return found
    if not gi.exact and flt.allowed is not None:
        if gi.spec.ivf_flat:
            return _every_list(catalog, conn, gi, q, wanted, flt)
        if len(flt.allowed) <= EXACT_LIMIT:
            return exact(catalog, conn, q, wanted, flt)
    k_search = wanted if gi.exact else min(max(REFINE * wanted, wanted + 32), int(gi.index.ntotal))
    sel, _keep = _selector(flt)
    boost, limit = 1, gi.max_boost(k_search)
    while True:
        scores, ids = _faiss_search(gi, q, k_search, sel, flt, boost)
        if len(ids) >= want or boost >= limit:
            break
        boost = min(limit, boost * 4)
    if len(ids) < want:
        if gi.exact:
            log.error("flat index returned %d of %d allowed items", len(ids), want)
            return sorted_hits(scores, ids)
        return exact(catalog, conn, q, wanted, flt)
    if not gi.exact and not gi.spec.flat_codes:  # SQ/PQ codes: re-score with true vectors
        ids, x = catalog.embeddings_of(conn, ids)
        scores = x @ q[0]
    scores, ids = sorted_hits(scores, ids)
    return scores[:wanted], ids[:wanted]


def _candidates(gi: GalleryIndex, q: np.ndarray, wanted: int, flt: ResolvedFilter) -> Ranked | None:
    """auto: the candidate index proposes, the flat one re-scores. Widens nprobe (x4) while
    it proposes fewer than exist; None if even every list does not (then search exactly)."""
    spec = gi.spec
    want = min(wanted, flt.n_avail)
    k_search = min(max(spec.candidates, REFINE * wanted), int(gi.ann.ntotal))
    sel, _keep = _selector(flt)
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
    scores, ids = sorted_hits(x @ q[0], ids)
    return scores[:wanted], ids[:wanted]


def _every_list(
    catalog: Catalog,
    conn: sqlite3.Connection,
    gi: GalleryIndex,
    q: np.ndarray,
    wanted: int,
    flt: ResolvedFilter,
) -> Ranked:
    """IVF,Flat under a filter: the lists hold the float vectors, so scanning them all through
    the selector scores only the allowed items, exactly, as a flat index would."""
    sel, _keep = _selector(flt)
    params = faiss.SearchParametersIVF(sel=sel, nprobe=gi.spec.nlist)
    d, i = gi.index.search(q, min(wanted, int(gi.index.ntotal)), params=params)
    valid = i[0] >= 0
    scores, ids = sorted_hits(d[0][valid], i[0][valid])
    if len(ids) < min(wanted, flt.n_avail):
        log.error("IVF scan returned %d of %d allowed items", len(ids), flt.n_avail)
        return exact(catalog, conn, q, wanted, flt)
    return scores, ids


def _faiss_search(
    gi: GalleryIndex, q: np.ndarray, wanted: int, sel: Any, flt: ResolvedFilter, boost: int
) -> Ranked:
    if not gi.no_params or sel is None:
        try:
            d, i = gi.index.search(q, wanted, params=gi.params(sel, wanted, boost))
            valid = i[0] >= 0
            return d[0][valid], i[0][valid]
        except RuntimeError as e:
            if "params" not in str(e):
                raise
            gi.no_params = True  # e.g. IndexPQ: filter the unfiltered ranking instead
    m = wanted
    ntotal = int(gi.index.ntotal)
    while True:
        d, i = gi.index.search(q, min(m, ntotal))
        d, i = d[0][i[0] >= 0], i[0][i[0] >= 0]
        keep = np.isin(i, flt.allowed) if flt.allowed is not None else ~np.isin(i, flt.negatives)
        if keep.sum() >= wanted or m >= ntotal:
            return d[keep][:wanted], i[keep][:wanted]
        m *= 4


def exact(
    catalog: Catalog, conn: sqlite3.Connection, q: np.ndarray, wanted: int, flt: ResolvedFilter
) -> Ranked:
    """Exact top ``wanted`` from the stored embeddings (approximate kinds' safety net)."""
    best_s, best_i = np.zeros(0, np.float32), np.zeros(0, np.int64)

    def merge(ids: np.ndarray, x: np.ndarray) -> None:
        nonlocal best_s, best_i
        s, i = sorted_hits(np.concatenate([best_s, x @ q[0]]), np.concatenate([best_i, ids]))
        best_s, best_i = s[:wanted], i[:wanted]

    if flt.allowed is not None:
        for start in range(0, len(flt.allowed), CHUNK):
            merge(*catalog.embeddings_of(conn, flt.allowed[start : start + CHUNK]))
    else:
        for ids, x in catalog.iter_embeddings(conn, flt.gallery):
            keep = ~np.isin(ids, flt.negatives)
            merge(ids[keep], x[keep])
    return best_s, best_i
