"""One gallery's FAISS index and the bookkeeping that keeps it equal to SQLite.

Kinds (see ``spec.py``): ``Flat`` is ``IndexIDMap2(IndexFlatIP)`` over SQLite rowids. ``auto``
keeps that flat index and, past its threshold, adds a trained candidate index over the same
rowids (``ann``). Kinds that need training are searched with a flat index until they hold
``train_size`` vectors, then trained on a sample and swapped in; IVF indexes keep the rowids
themselves (``add_with_ids``) because ``IndexIDMap2`` around an IVF index mis-maps ids after
``remove_ids``; other kinds are wrapped in ``IndexIDMap2``. Graphs without ``remove_ids``
(``HNSW32``) turn a deletion into a tombstone, excluded from every search through the selector,
and are rebuilt once tombstones reach ``COMPACT_FRACTION`` of the index (and ``COMPACT_MIN``).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from ..base import StoreError
from .spec import IndexSpec

__all__ = ["COMPACT_FRACTION", "COMPACT_MIN", "GalleryIndex", "ivf_ids", "no_polysemous"]

COMPACT_FRACTION = 0.25
COMPACT_MIN = 64


def no_polysemous(index: Any) -> None:
    """Switch off PQ polysemous training (on by default in FAISS).

    It only serves Hamming pre-filtering, which the store never enables, and makes training
    many times slower.
    """
    for _ in range(4):
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False
        sub = getattr(index, "index", None) or getattr(index, "storage", None)
        if sub is None:
            return
        index = faiss.downcast_index(sub)  # borrowed: the parent keeps owning it


def ivf_ids(index: Any) -> np.ndarray:
    """Every id in an IVF index's lists, sorted."""
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [np.zeros(0, np.int64)]
    for no in range(ivf.nlist):
        n = lists.list_size(no)
        if n:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(no), n).copy())
    return np.sort(np.concatenate(parts).astype(np.int64))


class GalleryIndex:
    """``index``: the flat index, or the trained / approximate one; ``exact`` says which.
    ``ann``: auto's candidate index (or None). ``deleted``: tombstoned rowids."""

    def __init__(self, spec: IndexSpec, generation: int, index: Any = None, exact: bool = True):
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
    def empty(cls, spec: IndexSpec, generation: int) -> GalleryIndex:
        """What a gallery starts with: flat, unless the kind needs no training nor is flat."""
        if spec.exact or spec.needs_training:
            return cls(spec, generation)
        base = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        return cls(spec, generation, faiss.IndexIDMap2(base), exact=False)

    @classmethod
    def trained(cls, spec: IndexSpec, generation: int, sample: np.ndarray) -> GalleryIndex:
        """An empty index of the target kind, trained on ``sample`` ("auto": flat + ann)."""
        base = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        no_polysemous(base)
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

    @property
    def due_training(self) -> bool:
        spec = self.spec
        return not self.switched and spec.needs_training and self.live >= spec.train_size

    @property
    def due_compaction(self) -> bool:
        return len(self.deleted) >= max(COMPACT_MIN, int(self.index.ntotal * COMPACT_FRACTION))

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

    def remove_many(self, rowids: np.ndarray) -> None:
        """Remove several rowids at once (one pass over an IVF's lists, not one per id)."""
        rowids = np.ascontiguousarray(rowids, dtype=np.int64)
        if self.removable:
            n = self.index.remove_ids(faiss.IDSelectorBatch(rowids))
            if n != len(rowids):
                raise StoreError(f"index held {n} of {len(rowids)} rowids to remove")
        else:
            self.deleted.update(int(i) for i in rowids)
        if self.ann is not None and self.ann.remove_ids(faiss.IDSelectorBatch(rowids)) != len(
            rowids
        ):
            raise StoreError("candidate index did not hold every rowid to remove")

    def all_ids(self) -> np.ndarray:
        """Every id the FAISS index holds, tombstones included, sorted."""
        if isinstance(self.index, faiss.IndexIDMap2):
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        return ivf_ids(self.index)

    def ann_ids(self) -> np.ndarray:
        """The ids the candidate index holds, sorted (empty without one)."""
        return np.zeros(0, np.int64) if self.ann is None else ivf_ids(self.ann)

    def ids(self) -> np.ndarray:
        """The live ids (what SQLite must hold for this gallery), sorted."""
        ids = self.all_ids()
        if self.deleted:
            ids = ids[~np.isin(ids, np.fromiter(self.deleted, np.int64))]
        return ids

    def params(self, sel: Any, wanted: int, boost: int = 1) -> Any:
        """Search parameters carrying ``sel``; ``boost`` widens approximate searches."""
        spec = self.spec
        if self.exact or spec.family == "generic":
            return faiss.SearchParameters(sel=sel) if sel is not None else None
        if spec.family == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=min(spec.nlist, spec.nprobe * boost))
        ef = max(spec.ef_search, wanted) * boost
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(min(ef, 1 << 30)))

    def max_boost(self, wanted: int) -> int:
        """The widening at which an approximate search has looked at everything it can."""
        spec = self.spec
        if self.exact or spec.family == "generic":
            return 1
        if spec.family == "ivf":
            return -(-spec.nlist // spec.nprobe)
        return max(1, -(-int(self.index.ntotal) // max(spec.ef_search, wanted)))
