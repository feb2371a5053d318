"""DropBlock*: DropBlock with independent block height and width (the paper's "variable size").

Seeds are drawn on the map extended by (block_height - 1, block_width - 1), each seed the
top-left corner of a block_height x block_width rectangle, and the map keeps what falls
inside it. Every position is then covered by exactly block_height * block_width candidate
seeds, wherever it lies, so each position is dropped with probability exactly ``drop_prob``:
no bias toward the centre (the original DropBlock draws seeds only where a whole block
fits, so border positions are dropped less often), and no even-size off-by-one (a block of
width 8 is 8 wide, not 9). A block keeps its full size wherever it lies inside the map;
only the map's own edge cuts it.

Kept positions are scaled by 1 / (1 - drop_prob), so the expectation of the output equals
the input exactly. The same mask applies to every channel of a sample, as in DropBlock.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropBlock2d"]


class DropBlock2d(nn.Module):
    """Drops rectangular blocks during training; the identity in eval."""

    def __init__(self, drop_prob: float = 0.1, block_height: int = 5, block_width: int = 8) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        if block_height < 1 or block_width < 1:
            raise ValueError(f"block size must be positive, got {block_height}x{block_width}")
        self.drop_prob = drop_prob
        self.block_height = block_height
        self.block_width = block_width

    @property
    def seed_prob(self) -> float:
        """Per-seed probability such that 1 - (1 - gamma)^(bh * bw) = drop_prob."""
        return 1.0 - (1.0 - self.drop_prob) ** (1.0 / (self.block_height * self.block_width))

    def mask(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """A keep-mask ``[batch, 1, height, width]`` of ones and zeros (one draw)."""
        bh, bw = self.block_height, self.block_width
        seeds = torch.rand(batch, 1, height + bh - 1, width + bw - 1, device=device)
        seeds = (seeds < self.seed_prob).float()
        dropped = F.max_pool2d(seeds, kernel_size=(bh, bw), stride=1)
        return 1.0 - dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = self.mask(x.shape[0], x.shape[2], x.shape[3], x.device).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.drop_prob))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block={self.block_height}x{self.block_width}"
