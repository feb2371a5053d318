"""CUHK03 under the new protocol (Zhong et al. 2017): 767 training and 700 test identities.

The supported layout is the distributed ``cuhk03-np`` folder layout::

    cuhk03-np/labeled/{bounding_box_train,query,bounding_box_test}/PPPP_cC_N.png
    cuhk03-np/detected/{bounding_box_train,query,bounding_box_test}/PPPP_cC_N.png

(identity, camera C in 1..2, image number). The original release (``cuhk03_release/cuhk-03.mat``
with ``cuhk03_new_protocol_config_*.mat``) is MATLAB v7.3 data that would need an extra
dependency to read; convert it to the cuhk03-np layout (or download cuhk03-np) instead.
Counts are checked against the paper's table 1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._common import (
    SPLIT_FOLDERS,
    NamePattern,
    as_path,
    child_dir,
    load_split_layout,
    require_folder,
    require_split_folders,
)
from .base import DatasetError, ReIDDataset

__all__ = ["CUHK03_VARIANTS", "load_cuhk03", "load_cuhk03_detected", "load_cuhk03_labeled"]

CUHK03_VARIANTS = ("labeled", "detected")
CUHK03_PATTERN = NamePattern(
    re.compile(r"(?P<pid>\d+)_c(?P<cam>\d+)(?:_.+)?"), "PPPP_cC_N.png (PPPP_cC_... accepted)"
)
_NP_FOLDERS = ("cuhk03-np", "cuhk03_np", "cuhk03np")
_MAT_PLACES = ("cuhk-03.mat", "cuhk03_release/cuhk-03.mat", "cuhk03/cuhk03_release/cuhk-03.mat")


def _has_splits(folder: Path) -> bool:
    return any((folder / s).is_dir() for s in SPLIT_FOLDERS)


def _find_variant_folder(display: str, root: Path, variant: str) -> Path:
    """The ``<variant>`` folder: ``root`` itself, ``root/<variant>`` or ``root/cuhk03-np/...``."""
    require_folder(display, root)
    if _has_splits(root):
        other = next(v for v in CUHK03_VARIANTS if v != variant)
        if root.name.lower() == other:
            raise DatasetError(
                f"{display} at {root}: this is the {other!r} folder; point at it with "
                f"cuhk03-{other}, or at {root.parent} for cuhk03-{variant}"
            )
        return root
    bases = [root]
    for name in _NP_FOLDERS:
        for parent in (root, child_dir(root, "cuhk03")):
            found = child_dir(parent, name) if parent is not None else None
            if found is not None and found not in bases:
                bases.append(found)
    for base in bases:
        folder = child_dir(base, variant)
        if folder is not None:
            return folder
    if any((root / place).is_file() for place in _MAT_PLACES):
        raise DatasetError(
            f"{display} at {root}: found only the original release (cuhk-03.mat), which this "
            "loader does not read; convert it to the cuhk03-np layout "
            f"(cuhk03-np/{variant}/{{{','.join(SPLIT_FOLDERS)}}} with PPPP_cC_N.png files, e.g. "
            "with the new-protocol scripts of Zhong et al.) or download cuhk03-np"
        )
    looked = ", ".join(str(b / variant) for b in bases)
    raise DatasetError(
        f"{display} at {root}: missing folder {variant!r} (looked for {looked}; expected "
        f"cuhk03-np/{variant}/ holding {', '.join(SPLIT_FOLDERS)})"
    )


def load_cuhk03(
    root: str | os.PathLike[str], variant: str = "labeled", *, check_counts: bool = True
) -> ReIDDataset:
    """CUHK03-NP ``variant`` ("labeled" or "detected") at ``root``.

    ``root`` may be the variant folder, the ``cuhk03-np`` folder, or a folder holding it.
    """
    if variant not in CUHK03_VARIANTS:
        raise DatasetError(
            f"unknown CUHK03 variant {variant!r} (expected one of {', '.join(CUHK03_VARIANTS)})"
        )
    display = f"CUHK03-NP ({variant})"
    folder = _find_variant_folder(display, as_path(root), variant)
    require_split_folders(display, folder)
    return load_split_layout(
        name=f"cuhk03-{variant}",
        display=display,
        folder=folder,
        pattern=CUHK03_PATTERN,
        junk_pid=None,
        distractor_pid=None,
        check_counts=check_counts,
    )


def load_cuhk03_labeled(root: str | os.PathLike[str], *, check_counts: bool = True) -> ReIDDataset:
    """CUHK03-NP with the manually labelled boxes."""
    return load_cuhk03(root, "labeled", check_counts=check_counts)


def load_cuhk03_detected(root: str | os.PathLike[str], *, check_counts: bool = True) -> ReIDDataset:
    """CUHK03-NP with the DPM-detected boxes."""
    return load_cuhk03(root, "detected", check_counts=check_counts)
