"""The rows of the paper's table 5 (and the section 3.4 stage-4 ablation) as configurations.

A variant names what the local branch drops and where SONA sits; depth, input size and the
drop's strength come from the preset it is applied to, so ``tiny`` and ``paper`` run the same
table. ``BL`` is the baseline (backbone, global and local branch, no drop); ``DB`` the original
square DropBlock, ``DB*`` the paper's DropBlock*, ``BFE`` batch feature erasing.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from .config import SONANetConfig

__all__ = ["VARIANTS", "Variant", "apply_variant"]


class Variant(NamedTuple):
    sona_stages: tuple[int, ...]
    drop: str


#: Table 5's rows in the paper's order, then the stage-4 placement of section 3.4.
VARIANTS: dict[str, Variant] = {
    "BL": Variant((), "none"),
    "BL+DB": Variant((), "dropblock"),
    "BL+DB*": Variant((), "dropblock*"),
    "BL+BFE": Variant((), "bfe"),
    "BL+SONA2": Variant((2,), "none"),
    "BL+BFE+SONA2": Variant((2,), "bfe"),
    "SONA2-Net": Variant((2,), "dropblock*"),
    "SONA3-Net": Variant((3,), "dropblock*"),
    "SONA2+3-Net": Variant((2, 3), "dropblock*"),
    "SONA4-Net": Variant((4,), "dropblock*"),
}


def apply_variant(config: SONANetConfig, name: str) -> SONANetConfig:
    """``config`` with the SONA placement and local drop of variant ``name``."""
    try:
        variant = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
    return dataclasses.replace(config, sona_stages=variant.sona_stages, drop=variant.drop)
