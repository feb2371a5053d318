"""Ranking evaluation for person re-identification: CMC, mAP, mINP and k-reciprocal re-ranking.

Why a protocol: re-ID numbers are only comparable when every paper and every run ranks the
gallery the same way. We follow the Market-1501 single-query protocol used by the re-ID
literature (and by the SONA-Net paper's tables):

* each query ranks the whole gallery by ascending distance; the sort is stable, so gallery
  entries at equal distance keep their gallery order (results do not depend on the sort
  algorithm);
* gallery entries showing the query's identity *from the query's own camera* are "junk": they
  are removed from that query's ranking (finding the same person in the same camera is not
  re-identification). Gallery entries of other identities are never removed;
* a query with no correct match left after junk removal is skipped; the CMC curve, mAP and mINP
  are averaged over the remaining ("valid") queries;
* ``cmc[k]`` is 1 when the first correct match is at rank ``<= k + 1``; AP is the mean of the
  precision at each correct match (the definition used by the open-source re-ID toolkits; the
  original Market-1501 MATLAB code interpolates precision trapezoidally, which differs slightly);
* mINP (Ye et al., 2021) rewards finding the *hardest* correct match: INP = number of correct
  matches / rank of the last one.

Market-1501 "distractor"/"junk" image conventions (identity ``-1``/``0``) are the dataset
loaders' business: here identities are plain labels compared for equality.

``re_ranking`` implements k-reciprocal re-ranking (Zhong et al., CVPR 2017) from the paper's
description; see its docstring for the normalisation used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "RankingMetrics",
    "cmc_map",
    "cosine_distance",
    "euclidean_distance",
    "evaluate",
    "re_ranking",
]

# A query whose identity has more than this many valid gallery items is ranked by sorting its
# whole row (O(G log G)) instead of counting, for each correct match, the gallery entries in
# front of it (two O(G) passes per match). Module-level so tests can force either path.
_SORT_THRESHOLD = 256

# Rows of the combined (query + gallery) distance matrix handled at once by ``re_ranking``.
_RERANK_ROW_CHUNK = 256


def _to_numpy(x: Any) -> np.ndarray:
    """Tensor or array-like to a numpy array (no copy for CPU tensors and arrays)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # bfloat16 has no numpy equivalent; float16 is promoted too
        return x.cpu().numpy()
    return np.asarray(x)


def _labels(x: Any, n: int, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-d with {n} entries, got shape {np.shape(arr)}")
    return arr


def _check_finite_order(values: np.ndarray, what: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise ValueError(f"{what} contains NaN; distances must be comparable")


@dataclass(frozen=True)
class RankingMetrics:
    """Ranking quality over the valid queries of one evaluation.

    ``cmc`` has ``max_rank`` entries (``cmc[k]`` = fraction of valid queries whose first correct
    match is at rank ``<= k + 1``); ``mAP`` and ``mINP`` are fractions in [0, 1].
    """

    cmc: np.ndarray
    mAP: float  # noqa: N815 - the field names are the metrics' usual names
    mINP: float  # noqa: N815
    num_valid_queries: int

    def rank(self, k: int) -> float:
        """Rank-``k`` accuracy, ``cmc[k - 1]``; ``ValueError`` if the curve is shorter than k."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank-{k} needs max_rank >= {k}; this curve has {len(self.cmc)}")
        return float(self.cmc[k - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def rank5(self) -> float:
        return self.rank(5)

    @property
    def rank10(self) -> float:
        return self.rank(10)

    def to_dict(self) -> dict[str, float | int]:
        """Scalar summary for logs and JSON: mAP, mINP, rank-1/5/10 (when available), count."""
        out: dict[str, float | int] = {"mAP": self.mAP, "mINP": self.mINP}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = self.rank(k)
        out["num_valid_queries"] = self.num_valid_queries
        return out


def _ranks_by_counting(d: np.ndarray, good: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """1-based positions of ``good`` gallery columns in the stable ascending order of row ``d``,
    counting only non-junk entries.

    In a stable sort, column ``k`` comes before column ``j`` iff ``d[k] < d[j]`` or
    ``d[k] == d[j] and k < j``; we count those columns directly instead of sorting the row.
    """
    dm = d[good]
    # Counting row by row is several times faster than count_nonzero(..., axis=1).
    before = np.fromiter((np.count_nonzero(row) for row in d < dm[:, None]), np.int64, dm.size)
    # Each good column equals itself; any further equality is a tie to break by index.
    if np.count_nonzero(d == dm[:, None]) > dm.size:
        for t, j in enumerate(good):
            before[t] += np.count_nonzero(d[:j] == d[j])
    if junk.size:
        dj = d[junk]
        junk_first = (dj[None, :] < dm[:, None]) | (
            (dj[None, :] == dm[:, None]) & (junk[None, :] < good[:, None])
        )
        before = before - np.count_nonzero(junk_first, axis=1)
    return before + 1


def _ranks_by_sorting(d: np.ndarray, good: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """Same result as ``_ranks_by_counting``, by a stable sort of the whole row."""
    order = np.argsort(d, kind="stable")
    pos = np.empty(d.shape[0], dtype=np.int64)
    pos[order] = np.arange(d.shape[0])
    gpos = pos[good]
    junk_before = np.searchsorted(np.sort(pos[junk]), gpos) if junk.size else 0
    return gpos - junk_before + 1


def evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    map_max_rank: int | None = None,
) -> RankingMetrics:
    """CMC, mAP and mINP under the Market-1501 single-query protocol (see the module docstring).

    ``distmat`` is ``[num_query, num_gallery]`` (smaller = closer; numpy or torch); identities
    and camera ids are 1-d label arrays compared for equality. Raises ``ValueError`` on bad
    shapes, NaN distances, ``max_rank < 1``, or when no query has a valid match.

    ``max_rank`` is the CMC curve's length only; mAP ranks the whole gallery. With
    ``map_max_rank`` each AP counts only the correct matches within that many ranks, still
    divided by all the query's correct matches, as BFE's evaluator cuts it at 50: never above
    the full mAP, equal to it when every match ranks within the cut.

    No row is sorted in the common case: the rank of each correct match is the number of
    gallery entries ahead of it in the stable order, counted directly, so a Market-1501-sized
    problem (3,368 x 19,732) takes well under a second on one core. Identities with more than
    ``_SORT_THRESHOLD`` matches per query fall back to a stable sort of that row.
    """
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-d [num_query, num_gallery], got shape {dist.shape}")
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    max_rank = int(max_rank)
    if map_max_rank is not None and (int(map_max_rank) != map_max_rank or map_max_rank < 1):
        raise ValueError(f"map_max_rank must be a positive integer, got {map_max_rank!r}")
    nq, ng = dist.shape
    qp = _labels(q_pids, nq, "q_pids")
    gp = _labels(g_pids, ng, "g_pids")
    qc = _labels(q_camids, nq, "q_camids")
    gc = _labels(g_camids, ng, "g_camids")

    # Group the gallery by identity once: a query's same-identity items are then a slice of
    # ``g_by_pid`` (in ascending gallery order), and no query x gallery mask is ever built.
    codes, inverse = np.unique(np.concatenate([qp, gp]), return_inverse=True)
    q_code, g_code = inverse[:nq], inverse[nq:]
    g_by_pid = np.argsort(g_code, kind="stable")
    bounds = np.searchsorted(g_code[g_by_pid], np.arange(len(codes) + 1))

    first = np.empty(nq, dtype=np.int64)
    ap = np.empty(nq, dtype=np.float64)
    inp = np.empty(nq, dtype=np.float64)
    valid = np.zeros(nq, dtype=bool)
    chunk = max(1, 4_000_000 // max(ng, 1))
    for start in range(0, nq, chunk):
        rows = dist[start : start + chunk]
        _check_finite_order(rows, "distmat")
        for r in range(rows.shape[0]):
            i = start + r
            c = q_code[i]
            same = g_by_pid[bounds[c] : bounds[c + 1]]
            if same.size == 0:
                continue
            same_cam = gc[same] == qc[i]
            good = same[~same_cam]
            if good.size == 0:
                continue
            junk = same[same_cam]
            rank_fn = _ranks_by_sorting if good.size > _SORT_THRESHOLD else _ranks_by_counting
            ranks = np.sort(rank_fn(rows[r], good, junk))
            hits = np.arange(1, ranks.size + 1)
            valid[i] = True
            first[i] = ranks[0]
            precision = hits / ranks
            if map_max_rank is not None:
                precision = precision[ranks <= map_max_rank]
            ap[i] = precision.sum() / ranks.size
            inp[i] = ranks.size / ranks[-1]

    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "no valid query: every query lacks a gallery match of its identity from another "
            "camera (check the identity/camera labels and the query/gallery split)"
        )
    # cmc[k] = fraction of valid queries with first hit at rank <= k + 1.
    first_hits = np.minimum(first[valid], max_rank + 1) - 1
    cmc = np.cumsum(np.bincount(first_hits, minlength=max_rank + 1)[:max_rank]) / num_valid
    cmc = cmc.astype(np.float64)
    cmc.setflags(write=False)
    return RankingMetrics(
        cmc=cmc,
        mAP=float(ap[valid].mean()),
        mINP=float(inp[valid].mean()),
        num_valid_queries=num_valid,
    )


def cmc_map(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """``(cmc[max_rank], mAP)`` under the Market-1501 protocol; see :func:`evaluate`.

    The CMC array is a writable float64 copy (``RankingMetrics.cmc`` itself is read-only).
    """
    metrics = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return metrics.cmc.copy(), metrics.mAP


def _features(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d [n, dim], got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def cosine_distance(query_features: Any, gallery_features: Any) -> np.ndarray:
    """``1 - q @ g.T`` as float32 ``[num_query, num_gallery]``.

    Features are expected to be L2-normalised already (``model.embed`` output), so this is one
    minus the cosine similarity, in [0, 2] up to rounding (values may stray by ~1e-6).
    """
    q = _features(query_features, "query_features")
    g = _features(gallery_features, "gallery_features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: {q.shape[1]} vs {g.shape[1]}")
    out = q @ g.T
    np.subtract(np.float32(1.0), out, out=out)
    return out


def euclidean_distance(
    query_features: Any, gallery_features: Any, *, squared: bool = False
) -> np.ndarray:
    """Euclidean distance as float32 ``[num_query, num_gallery]``, plain or ``squared``.

    Computed as ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))`` in float32. Both rank a gallery the
    same way; re-ranking is where they differ (see :func:`re_ranking`).
    """
    q = _features(query_features, "query_features")
    g = _features(gallery_features, "gallery_features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: {q.shape[1]} vs {g.shape[1]}")
    sq = q @ g.T
    sq *= np.float32(-2.0)
    sq += np.einsum("ij,ij->i", q, q)[:, None]
    sq += np.einsum("ij,ij->i", g, g)[None, :]
    np.maximum(sq, 0.0, out=sq)
    return sq if squared else np.sqrt(sq, out=sq)


# --------------------------------------------------------------------------------------------
# k-reciprocal re-ranking
# --------------------------------------------------------------------------------------------


class _Combined:
    """Row access to the (nq + ng) x (nq + ng) matrix [[q_q, q_g], [q_g.T, g_g]] without
    materialising it. Negative entries are clipped to 0."""

    def __init__(self, qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> None:
        self.qg, self.qq, self.gg = qg, qq, gg
        self.nq, self.ng = qg.shape
        self.n = self.nq + self.ng

    def rows(self, start: int, stop: int) -> np.ndarray:
        nq = self.nq
        parts = []
        if start < nq:
            s, e = start, min(stop, nq)
            parts.append(np.concatenate([self.qq[s:e], self.qg[s:e]], axis=1))
        if stop > nq:
            s, e = max(start, nq) - nq, stop - nq
            parts.append(np.concatenate([self.qg[:, s:e].T, self.gg[s:e]], axis=1))
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]  # a fresh array
        _check_finite_order(out, "re_ranking distances")
        return np.maximum(out, 0.0, out=out)

    def lookup(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Entries at (r[i], c[i]), clipped to >= 0, float32."""
        nq = self.nq
        out = np.empty(r.shape, dtype=np.float32)
        rq, cq = r < nq, c < nq
        m = rq & cq
        out[m] = self.qq[r[m], c[m]]
        m = rq & ~cq
        out[m] = self.qg[r[m], c[m] - nq]
        m = ~rq & cq
        out[m] = self.qg[c[m], r[m] - nq]
        m = ~rq & ~cq
        out[m] = self.gg[r[m] - nq, c[m] - nq]
        return np.maximum(out, 0.0, out=out)


def _nearest(comb: _Combined, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sample itself, then its ``k - 1`` nearest others in stable order
    (ties broken by index); and the row maxima used for normalisation."""
    n = comb.n
    top = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    for start in range(0, n, _RERANK_ROW_CHUNK):
        stop = min(n, start + _RERANK_ROW_CHUNK)
        rows = comb.rows(start, stop)
        row_max[start:stop] = rows.max(axis=1)
        idx = np.arange(stop - start)
        rows[idx, idx + start] = -1.0  # the sample itself always ranks first
        if k < n:
            # (partition is SIMD-accelerated for floats, argpartition is not)
            kth = np.partition(rows, k - 1, axis=1)[:, k - 1 : k]  # the k-th smallest value
            chosen = rows <= kth
            # Where the k-th value is tied across the cut, keep the lowest-index ties (stable).
            for r in np.flatnonzero(np.count_nonzero(chosen, axis=1) > k):
                ties = np.flatnonzero(rows[r] == kth[r])
                chosen[r, ties[k - np.count_nonzero(rows[r] < kth[r]) :]] = False
            sel = np.nonzero(chosen)[1].reshape(stop - start, k)
        else:
            sel = np.broadcast_to(np.arange(n), (stop - start, n))
        vals = np.take_along_axis(rows, sel, axis=1)
        order = np.lexsort((sel, vals), axis=1)  # by value, then by index
        top[start:stop] = np.take_along_axis(sel, order, axis=1)
    return top, row_max


def _reciprocal_mask(fw: np.ndarray) -> np.ndarray:
    """mask[p, a] = True iff p is among the forward neighbours of fw[p, a]."""
    n = fw.shape[0]
    mask = np.empty(fw.shape, dtype=bool)
    for start in range(0, n, _RERANK_ROW_CHUNK):
        stop = min(n, start + _RERANK_ROW_CHUNK)
        p = np.arange(start, stop)[:, None, None]
        mask[start:stop] = (fw[fw[start:stop]] == p).any(axis=2)
    return mask


def _k_reciprocal_sets(top: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """R*(p, k1) for every sample as CSR (indptr, indices), indices sorted per row.

    R(p, k) = {g in N(p, k) : p in N(g, k)}, with N(p, k) = p and its k nearest others.
    R*(p) = R(p, k1) plus R(q, k1h) for each q in R(p, k1) whose R(q, k1h) has more than 2/3 of
    its members in R(p, k1), with k1h = round(k1 / 2) (at least 1).
    """
    n = top.shape[0]
    k1h = max(1, round(k1 / 2))
    fw = top[:, : k1 + 1]
    fwh = top[:, : k1h + 1]
    r1 = _reciprocal_mask(fw)
    r2 = _reciprocal_mask(fwh)
    indptr = np.zeros(n + 1, dtype=np.int64)
    chunks: list[np.ndarray] = []
    step = max(1, min(_RERANK_ROW_CHUNK, 2_000_000 // ((k1 + 1) ** 2 * (k1h + 1))))
    for start in range(0, n, step):
        stop = min(n, start + step)
        f, m1 = fw[start:stop], r1[start:stop]  # [C, k1+1]
        cand, cand_m = fwh[f], r2[f]  # [C, k1+1, k1h+1]: R(q, k1h) of each q in N(p, k1)
        in_r = ((cand[..., None] == f[:, None, None, :]) & m1[:, None, None, :]).any(axis=3)
        overlap = np.count_nonzero(in_r & cand_m, axis=2)
        size = np.count_nonzero(cand_m, axis=2)
        accept = m1 & (3 * overlap > 2 * size)  # more than 2/3, as Zhong et al.'s reference
        members = np.concatenate(
            [
                np.where(m1, f, n),
                np.where(accept[..., None] & cand_m, cand, n).reshape(f.shape[0], -1),
            ],
            axis=1,
        )
        members.sort(axis=1)
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        indptr[start + 1 : stop + 1] = np.count_nonzero(keep, axis=1)
        chunks.append(members[keep])
    np.cumsum(indptr, out=indptr)
    return indptr, np.concatenate(chunks)


def _row_ids(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def _query_expansion(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, top: np.ndarray, k2: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V'[p] = mean of V[x] over x in N(p, k2 - 1) (p and its k2 - 1 nearest), as CSR."""
    n = top.shape[0]
    if k2 <= 1:
        return indptr, indices, data
    nnz = np.diff(indptr)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    out_idx: list[np.ndarray] = []
    out_val: list[np.ndarray] = []
    step = max(1, 2048 // k2)
    for start in range(0, n, step):
        stop = min(n, start + step)
        nb = top[start:stop, :k2].reshape(-1)  # neighbour rows to average
        owner = np.repeat(np.arange(stop - start), k2)
        counts = nnz[nb]
        total = int(counts.sum())
        offs = np.repeat(indptr[nb] - np.cumsum(counts) + counts, counts) + np.arange(total)
        key = np.repeat(owner, counts) * n + indices[offs]
        uniq, inv = np.unique(key, return_inverse=True)
        val = np.bincount(inv, weights=data[offs], minlength=uniq.size) / k2
        rows = uniq // n
        out_ptr[start + 1 : stop + 1] = np.bincount(rows, minlength=stop - start)
        out_idx.append(uniq % n)
        out_val.append(val.astype(np.float32))
    np.cumsum(out_ptr, out=out_ptr)
    return out_ptr, np.concatenate(out_idx), np.concatenate(out_val)


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017); returns the re-ranked ``[nq, ng]``.

    Zhong et al.'s and BFE's code square the distances they are given before anything else,
    and are given Euclidean ones: pass squared Euclidean distances (or ``1 - cos`` of
    L2-normalised features, which is half of that) to reproduce them; plain Euclidean ones
    give other results. Inputs are distances where smaller is closer: ``q_g_dist``
    ``[nq, ng]``, ``q_q_dist`` ``[nq, nq]`` and ``g_g_dist`` ``[ng, ng]``, numpy or torch.
    They form one matrix over all nq + ng samples, ``[[q_q, q_g], [q_g.T, g_g]]``, so q_q and
    g_g should be symmetric (rows are read as given). Negative entries (rounding in
    ``1 - cos``) are clipped to 0; NaN raises ``ValueError``.

    Normalisation: every row of that matrix is divided by its maximum (rows of non-negative
    distances then lie in [0, 1]; an all-zero row is left as is). That keeps each probe's order
    and puts the Gaussian kernel on a common scale. Steps, all on the normalised matrix ``d``:

    1. ``N(p, k)``: p followed by its k nearest others (stable order, ties by index);
       k-reciprocal sets ``R(p, k1)`` and their 1/2-k1 expansion ``R*(p)`` (see
       ``_k_reciprocal_sets``).
    2. ``V[p, x] = exp(-d[p, x])`` for x in ``R*(p)``, 0 elsewhere, each row scaled to sum 1.
    3. Local query expansion: ``V[p]`` is replaced by the mean of ``V`` over ``N(p, k2 - 1)``
       (``k2 = 1`` disables it).
    4. Jaccard distance ``1 - sum(min(V[p], V[g])) / sum(max(V[p], V[g]))``.
    5. Result ``(1 - lambda_value) * jaccard + lambda_value * d[q, g]``, float32; with
       ``lambda_value = 1`` it is exactly the normalised ``q_g_dist``.

    ``k1`` and ``k2`` larger than the number of samples are clipped. Memory stays
    O((nq + ng) * k1^2) beyond the inputs and the output, processed in row chunks.
    """
    qg = _to_numpy(q_g_dist).astype(np.float32, copy=False)
    qq = _to_numpy(q_q_dist).astype(np.float32, copy=False)
    gg = _to_numpy(g_g_dist).astype(np.float32, copy=False)
    if qg.ndim != 2:
        raise ValueError(f"q_g_dist must be 2-d [nq, ng], got shape {qg.shape}")
    nq, ng = qg.shape
    if qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise ValueError(
            f"shapes disagree: q_g {qg.shape}, q_q {qq.shape} (want {(nq, nq)}), "
            f"g_g {gg.shape} (want {(ng, ng)})"
        )
    if nq == 0 or ng == 0:
        raise ValueError("re_ranking needs at least one query and one gallery sample")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")

    comb = _Combined(qg, qq, gg)
    n = comb.n
    k1 = min(int(k1), n - 1)
    k2 = min(int(k2), n)
    top, row_max = _nearest(comb, max(k1 + 1, k2))
    scale = np.where(row_max > 0, 1.0 / np.maximum(row_max, np.finfo(np.float32).tiny), 1.0)
    scale = scale.astype(np.float32)

    # Gaussian-kernel vectors on the k-reciprocal sets, rows summing to 1.
    indptr, indices = _k_reciprocal_sets(top, k1)
    owners = _row_ids(indptr)
    data = np.exp(-(comb.lookup(owners, indices) * scale[owners]))
    data /= np.bincount(owners, weights=data, minlength=n)[owners].astype(np.float32)
    indptr, indices, data = _query_expansion(indptr, indices, data, top, k2)
    owners = _row_ids(indptr)
    row_sum = np.bincount(owners, weights=data, minlength=n)

    # Inverted index over the gallery rows: for each column j, the gallery rows with V[g, j] > 0.
    g_mask = owners >= nq
    g_cols, g_rows, g_vals = indices[g_mask], owners[g_mask] - nq, data[g_mask]
    by_col = np.argsort(g_cols, kind="stable")
    g_rows, g_vals = g_rows[by_col], g_vals[by_col]
    col_ptr = np.zeros(n + 1, dtype=np.int64)
    col_ptr[1:] = np.cumsum(np.bincount(g_cols, minlength=n))

    out = np.empty((nq, ng), dtype=np.float32)
    step = max(1, 4_000_000 // ng)
    for start in range(0, nq, step):
        stop = min(nq, start + step)
        lo, hi = indptr[start], indptr[stop]
        p = owners[lo:hi] - start
        cols, vals = indices[lo:hi], data[lo:hi]
        counts = col_ptr[cols + 1] - col_ptr[cols]
        total = int(counts.sum())
        pos = np.repeat(col_ptr[cols] - np.cumsum(counts) + counts, counts) + np.arange(total)
        mins = np.minimum(np.repeat(vals, counts), g_vals[pos])
        flat = np.repeat(p, counts) * ng + g_rows[pos]
        inter = np.bincount(flat, weights=mins, minlength=(stop - start) * ng)
        inter = inter.reshape(stop - start, ng)
        union = row_sum[start:stop, None] + row_sum[None, nq:]
        union -= inter
        np.divide(inter, union, out=inter)  # Jaccard similarity
        inter *= -(1.0 - lambda_value)
        inter += 1.0 - lambda_value  # (1 - lambda) * Jaccard distance
        original = np.maximum(qg[start:stop], 0.0) * scale[start:stop, None]
        original *= np.float32(lambda_value)
        np.add(inter, original, out=out[start:stop], casting="same_kind")
    return out
