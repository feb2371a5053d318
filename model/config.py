"""SONA-Net configuration: plain values only, so it travels in checkpoints as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["DROPS", "PRESETS", "SONANetConfig"]

#: The local branch's regulariser: none (the table's BL), the original square DropBlock (DB),
#: the paper's DropBlock* (DB*), or BFE's batch feature erasing.
DROPS = ("none", "dropblock", "dropblock*", "bfe")


@dataclass(frozen=True)
class SONANetConfig:
    """Everything that shapes the network.

    The defaults are the paper's: ResNet-50, SONA after stages 2 and 3 (the variant with
    the best Market-1501 mAP in table 2), 384 x 128 input, 512-d global and 1024-d local
    features, DropBlock* 0.1 with 5 x 8 blocks, 751 identities (Market-1501's training set).
    Stage 4 (after the last stage, before both branches) is the section 3.4 ablation only.
    ``drop="dropblock"`` uses square blocks of side ``block_height``.
    """

    depth: int = 50
    sona_stages: tuple[int, ...] = (2, 3)
    num_classes: int = 751
    input_size: tuple[int, int] = (384, 128)
    global_dim: int = 512
    local_dim: int = 1024
    sona_reduction: int = 2
    drop_prob: float = 0.1
    block_height: int = 5
    block_width: int = 8
    drop: str = "dropblock*"
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        # Accept lists (from JSON or a command line) but keep the frozen value hashable.
        object.__setattr__(self, "sona_stages", tuple(sorted(set(self.sona_stages))))
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if self.depth not in (18, 34, 50):
            raise ValueError(f"depth must be 18, 34 or 50, got {self.depth}")
        if not set(self.sona_stages) <= {2, 3, 4}:
            raise ValueError(f"sona_stages may hold 2, 3 and 4 only, got {self.sona_stages}")
        if self.drop not in DROPS:
            raise ValueError(f"drop must be one of {', '.join(DROPS)}, got {self.drop!r}")
        if self.block_height < 1 or self.block_width < 1:
            raise ValueError(
                f"block size must be positive, got {self.block_height}x{self.block_width}"
            )
        if self.num_classes < 0:
            raise ValueError(
                f"num_classes must be >= 0 (0: no classifiers), got {self.num_classes}"
            )
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(
                f"input_size must be (height, width), each >= 32, got {self.input_size}"
            )
        if self.global_dim < 1 or self.local_dim < 1:
            raise ValueError("global_dim and local_dim must be positive")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {self.drop_prob}")

    @property
    def embedding_dim(self) -> int:
        return self.global_dim + self.local_dim

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sona_stages"] = list(self.sona_stages)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SONANetConfig:
        """Build from a dict, refusing keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys: {unknown}")
        return cls(**data)


#: Named model configurations. ``tiny`` trains in minutes on two CPU cores.
PRESETS: dict[str, SONANetConfig] = {
    "paper": SONANetConfig(),
    "tiny": SONANetConfig(
        depth=18, sona_stages=(2,), input_size=(64, 32), block_height=2, block_width=2
    ),
}
