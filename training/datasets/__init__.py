"""Re-ID datasets: the paper's benchmarks, synthetic data and users' own footage.

``load_dataset(name, root, **options)`` is the one entry point; every loader returns a
``ReIDDataset`` of ``ImageRecord(path, pid, camid)``, only listing folders (no image is opened).
``require_evaluable`` says clearly why a dataset cannot be scored before any model runs.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from ._common import (
    IMAGE_EXTENSIONS,
    PAPER_COUNTS,
    DatasetCountWarning,
    SkippedFilesWarning,
    SplitCounts,
    require_evaluable,
)
from .base import DatasetError, ImageRecord, ReIDDataset
from .cuhk03 import load_cuhk03, load_cuhk03_detected, load_cuhk03_labeled
from .custom import load_custom
from .duke import load_dukemtmcreid
from .market1501 import load_market1501, load_synthetic

__all__ = [
    "DATASET_NAMES",
    "IMAGE_EXTENSIONS",
    "PAPER_COUNTS",
    "DatasetCountWarning",
    "DatasetError",
    "ImageRecord",
    "ReIDDataset",
    "SkippedFilesWarning",
    "SplitCounts",
    "load_cuhk03",
    "load_custom",
    "load_dataset",
    "load_dukemtmcreid",
    "load_market1501",
    "load_synthetic",
    "require_evaluable",
]

_LOADERS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "cuhk03-labeled": load_cuhk03_labeled,
    "cuhk03-detected": load_cuhk03_detected,
    "synthetic": load_synthetic,
    "custom": load_custom,
}
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> ReIDDataset:
    """Load dataset ``name`` (one of ``DATASET_NAMES``) from ``root``.

    Names match ignoring case, ``-`` and ``_`` (``Market-1501``, ``cuhk03_labeled``). Options go
    to the loader: ``check_counts`` for the benchmarks, ``test_fraction`` and ``seed`` for
    ``custom`` (whose root is a folder or a .csv file). Unknown names or options raise
    ``DatasetError``.
    """
    by_canonical = {_canonical(n): n for n in DATASET_NAMES}
    key = by_canonical.get(_canonical(str(name)))
    if key is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    loader = _LOADERS[key]
    signature = inspect.signature(loader)
    accepted = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"unknown option(s) {', '.join(unknown)} for dataset {key!r}; accepted: "
            f"{', '.join(accepted) or 'none'}"
        )
    return loader(root, **options)
