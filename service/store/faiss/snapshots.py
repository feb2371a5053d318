"""Index snapshots: a gallery's FAISS index on disk, used on open only if it is exactly SQLite's.

``index/<gallery>.faiss`` holds the index, ``index/<gallery>.ann.faiss`` auto's candidate index,
and ``index/<gallery>.json`` the generation (SQLite's change counter for the gallery) they were
written at, with their sizes. All three are written atomically; a snapshot whose generation,
kind, size or ids do not match SQLite is ignored and the index rebuilt from SQLite.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import faiss
import numpy as np

from ..durable import atomic_write
from .index import GalleryIndex
from .spec import IndexSpec

__all__ = ["load_snapshot", "remove_partial", "write_snapshot"]

log = logging.getLogger(__name__)


def remove_partial(index_dir: Path) -> None:
    """Remove temporary files of snapshots a crash interrupted."""
    for tmp in index_dir.glob("*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_snapshot(
    index_dir: Path, gallery: str, generation: int, spec: IndexSpec, truth: np.ndarray
) -> GalleryIndex | None:
    """The gallery's snapshot if it is exactly SQLite's state (``generation``, and the sorted
    rowids ``truth``), else None."""
    path = index_dir / f"{gallery}.faiss"
    side = index_dir / f"{gallery}.json"
    try:
        meta = json.loads(side.read_text())
        # a flat snapshot serves every kind that starts flat (Flat, auto, IVF, ...)
        flat = bool(meta.get("exact")) and (spec.exact or spec.needs_training)
        if (
            meta.get("generation") != generation
            or (meta.get("factory") != spec.factory and not flat)
            or meta.get("dim") != spec.dim
            or meta.get("size") != path.stat().st_size
        ):
            return None
        index = faiss.read_index(str(path))
        ann = None
        if spec.keep_flat and meta.get("ann") == spec.factory:
            ann_path = index_dir / f"{gallery}.ann.faiss"
            if meta.get("ann_size") != ann_path.stat().st_size:
                return None
            ann = faiss.read_index(str(ann_path))
    except (OSError, ValueError, RuntimeError) as e:
        log.info("snapshot of gallery %s unusable (%s): rebuilding", gallery, e)
        return None
    exact = bool(meta.get("exact"))
    if index.d != spec.dim or (exact and not isinstance(index, faiss.IndexIDMap2)):
        return None
    gi = GalleryIndex(spec, generation, index, exact=exact)
    held = gi.all_ids()
    if ann is not None:
        if ann.d != spec.dim or faiss.try_extract_index_ivf(ann) is None:
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


def write_snapshot(index_dir: Path, gallery: str, gi: GalleryIndex) -> None:
    """Write the gallery's index (and candidate index) and then the side file naming them."""
    spec = gi.spec
    path = index_dir / f"{gallery}.faiss"
    ann_path = index_dir / f"{gallery}.ann.faiss"
    atomic_write(path, lambda tmp: faiss.write_index(gi.index, str(tmp)))
    meta = {
        "generation": gi.generation,
        "factory": spec.factory,
        "dim": spec.dim,
        "exact": gi.exact,
        "size": path.stat().st_size,
        "ann": None,
    }
    if gi.ann is not None:
        atomic_write(ann_path, lambda tmp: faiss.write_index(gi.ann, str(tmp)))
        meta["ann"] = spec.factory
        meta["ann_size"] = ann_path.stat().st_size
    else:
        with contextlib.suppress(FileNotFoundError):
            ann_path.unlink()  # left by an "auto" store: not needed, not used
    atomic_write(index_dir / f"{gallery}.json", lambda tmp: tmp.write_text(json.dumps(meta)))
    gi.snapshot_generation = gi.generation
