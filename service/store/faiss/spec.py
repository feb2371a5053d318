"""Index kinds of the FAISS store: what a factory string implies, and the ``auto`` policy.

``auto`` (the default) searches a gallery exactly until it holds ``AUTO_THRESHOLD`` items;
from then on it also has a candidate index, ``IVF<nlist>,PQ<dim/4>x4fs`` (4-bit PQ fast scan,
dim/8 bytes a vector), which proposes ``AUTO_CANDIDATES`` items from ``AUTO_NPROBE`` of its
lists for the flat index to re-score exactly. nlist is ``AUTO_NLIST`` or less, so that k-means
has at least 39 vectors per list (FAISS's minimum) at the threshold. bench/search.py measured
these values; its figures are in bench/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from ..base import StoreError

__all__ = [
    "AUTO",
    "AUTO_CANDIDATES",
    "AUTO_NLIST",
    "AUTO_NPROBE",
    "AUTO_THRESHOLD",
    "IndexSpec",
    "auto_factory",
]

AUTO = "auto"
AUTO_THRESHOLD = 20_000
AUTO_NLIST = 512
AUTO_NPROBE = 128
AUTO_CANDIDATES = 100

Family = Literal["ivf", "hnsw", "generic"]


def auto_factory(threshold: int, dim: int) -> str:
    """The candidate index ``auto`` adds once a gallery holds ``threshold`` items."""
    nlist = 1
    while nlist < AUTO_NLIST and 39 * 2 * nlist <= threshold:
        nlist *= 2
    codes = f"PQ{dim // 4}x4fs" if dim % 8 == 0 else "SQ8"  # fast scan wants an even M
    return f"IVF{nlist},{codes}"


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class IndexSpec:
    """What the requested index implies, worked out once per store."""

    name: str  # what was asked for: "auto" or the factory string
    factory: str  # the FAISS factory string of the target index ("auto": auto_factory)
    dim: int
    exact: bool  # "Flat": the target index is the exact flat index
    needs_training: bool
    native_ids: bool  # IVF: add_with_ids/remove_ids on the index itself
    removable: bool  # False: deletions become tombstones
    family: Family  # which search parameters widen it: IVF's nprobe, HNSW's efSearch, none
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
    ) -> IndexSpec:
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
        family: Family = "generic"
        if ivf is not None:
            family = "ivf"
        elif isinstance(probe, faiss.IndexHNSW):
            family = "hnsw"
        return cls(
            name=name,
            factory=factory,
            dim=dim,
            exact=isinstance(probe, faiss.IndexFlat),
            needs_training=needs_training,
            native_ids=ivf is not None,
            removable=removable,
            family=family,
            flat_codes=ivf_flat or isinstance(probe, faiss.IndexHNSWFlat),
            ivf_flat=ivf_flat,
            keep_flat=keep_flat,
            candidates=AUTO_CANDIDATES,
            nlist=nlist,
            train_size=int(train_size),
            nprobe=min(int(nprobe), nlist) if nlist else 0,
            ef_search=int(ef_search),
        )
