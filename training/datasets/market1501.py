"""Market-1501 (``Market-1501-v15.09.15``) and the synthetic datasets written in its layout.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` holding
``PPPP_cCsS_FFFFFF_NN.jpg`` (identity, camera C from 1, sequence S, frame, box number).
Identity -1 marks junk images, left out of every split (the protocol ignores them); identity 0
marks distractors, kept in the gallery. Counts are checked against the paper's table 1 (see
``SplitCounts`` for how images and identities are counted).
"""

from __future__ import annotations

import os

from ._common import (
    MARKET_PATTERN,
    as_path,
    find_split_root,
    load_split_layout,
    require_folder,
    require_split_folders,
)
from .base import DatasetError, ReIDDataset

__all__ = ["load_market1501", "load_synthetic"]

_SUBFOLDERS = ("Market-1501-v15.09.15", "market1501", "Market-1501")
SYNTHETIC_MARKER = "synthetic.json"


def load_market1501(root: str | os.PathLike[str], *, check_counts: bool = True) -> ReIDDataset:
    """Market-1501 at ``root``: the dataset folder, or a folder holding it under its usual name.

    ``check_counts`` warns (``DatasetCountWarning``) when the counts differ from table 1.
    """
    display = "Market-1501"
    folder = find_split_root(display, as_path(root), _SUBFOLDERS)
    require_split_folders(
        display, folder, f", in this folder or in a sub-folder {' or '.join(_SUBFOLDERS[:2])}"
    )
    return load_split_layout(
        name="market1501",
        display=display,
        folder=folder,
        pattern=MARKET_PATTERN,
        junk_pid=-1,
        distractor_pid=0,
        check_counts=check_counts,
    )


def load_synthetic(root: str | os.PathLike[str]) -> ReIDDataset:
    """A dataset written by ``training.synthetic.make_dataset``: Market parsing, no table-1 check.

    The generator writes ``synthetic.json`` at the root once the images are complete, so its
    absence means an interrupted generation or a folder that is not a synthetic dataset.
    """
    display = "synthetic dataset"
    folder = as_path(root)
    require_folder(display, folder)
    if not (folder / SYNTHETIC_MARKER).is_file():
        raise DatasetError(
            f"{display} at {folder}: no {SYNTHETIC_MARKER}; the generation was incomplete "
            "(run `sona synth` again) or the folder is not a synthetic dataset"
        )
    require_split_folders(display, folder)
    return load_split_layout(
        name="synthetic",
        display=display,
        folder=folder,
        pattern=MARKET_PATTERN,
        junk_pid=-1,
        distractor_pid=0,
        check_counts=False,
    )
