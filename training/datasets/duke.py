"""DukeMTMC-reID: ``DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}``.

Files are named ``PPPP_cC_fFFFFFFF.jpg`` (identity, camera C from 1 to 8, frame). The dataset has
no junk label; its 408 distractor identities (seen by one camera only) appear in the gallery
under ordinary identity numbers. Counts are checked against the paper's table 1.
"""

from __future__ import annotations

import os
import re

from ._common import (
    NamePattern,
    as_path,
    find_split_root,
    load_split_layout,
    require_split_folders,
)
from .base import ReIDDataset

__all__ = ["load_dukemtmcreid"]

_SUBFOLDERS = ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid")
DUKE_PATTERN = NamePattern(re.compile(r"(?P<pid>\d+)_c(?P<cam>\d+)_f\d+"), "PPPP_cC_fFFFFFFF.jpg")


def load_dukemtmcreid(root: str | os.PathLike[str], *, check_counts: bool = True) -> ReIDDataset:
    """DukeMTMC-reID at ``root``: the dataset folder, or a folder holding ``DukeMTMC-reID``.

    ``check_counts`` warns (``DatasetCountWarning``) when the counts differ from table 1.
    """
    display = "DukeMTMC-reID"
    folder = find_split_root(display, as_path(root), _SUBFOLDERS)
    require_split_folders(display, folder, ", in this folder or in a sub-folder DukeMTMC-reID")
    return load_split_layout(
        name="dukemtmcreid",
        display=display,
        folder=folder,
        pattern=DUKE_PATTERN,
        junk_pid=None,
        distractor_pid=None,
        check_counts=check_counts,
    )
