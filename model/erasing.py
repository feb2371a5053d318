"""The local branch's other regularisers, for the paper's table-5 ablation.

``DropBlock2d`` (in dropblock.py) is the paper's DropBlock*. The rows ``BL+DB`` and ``BL+BFE``
compare it with the two it generalises:

* :class:`SquareDropBlock2d`: the original DropBlock (Ghiasi et al., NeurIPS 2018). Square
  blocks of ``block_size``; seeds only where a whole block fits (the "valid region"), each
  with probability gamma = (1 - keep_prob) / block_size^2 * (H W) / ((H - b + 1)(W - b + 1));
  kept activations rescaled by numel / count of kept positions.
* :class:`BatchErasing2d`: batch feature erasing (Dai et al., ICCV 2019, "BFE"). One
  rectangle per batch, the same for every sample and channel: ``height_ratio`` of the height
  and ``width_ratio`` of the width, at a random place; no rescaling, as in BFE's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchErasing2d", "SquareDropBlock2d"]


class SquareDropBlock2d(nn.Module):
    """DropBlock as published: square blocks seeded inside the valid region; identity in eval."""

    def __init__(self, drop_prob: float = 0.1, block_size: int = 5) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.drop_prob = drop_prob
        self.block_size = block_size

    def gamma(self, height: int, width: int) -> float:
        """The seed probability of the paper's equation (1), for a ``height x width`` map."""
        b = min(self.block_size, height, width)
        valid = (height - b + 1) * (width - b + 1)
        return self.drop_prob / (b * b) * (height * width) / valid

    def mask(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """A keep-mask ``[batch, 1, height, width]`` of ones and zeros (one draw)."""
        b = min(self.block_size, height, width)
        # Seeds are top-left corners, drawn only where the whole block fits.
        valid = torch.rand(batch, 1, height - b + 1, width - b + 1, device=device)
        seeds = (valid < self.gamma(height, width)).float()
        seeds = F.pad(seeds, (b - 1, b - 1, b - 1, b - 1))
        dropped = F.max_pool2d(seeds, kernel_size=b, stride=1)
        return 1.0 - dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = self.mask(x.shape[0], x.shape[2], x.shape[3], x.device).to(x.dtype)
        kept = keep.sum().clamp_min(1.0)
        return x * keep * (keep.numel() / kept)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


class BatchErasing2d(nn.Module):
    """BFE's batch feature erasing: one random rectangle zeroed in every sample of a batch."""

    def __init__(self, height_ratio: float = 1 / 3, width_ratio: float = 1.0) -> None:
        super().__init__()
        if not (0.0 < height_ratio <= 1.0 and 0.0 < width_ratio <= 1.0):
            raise ValueError(f"ratios must be in (0, 1], got {height_ratio}, {width_ratio}")
        self.height_ratio = height_ratio
        self.width_ratio = width_ratio

    def region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, rows, columns) of one draw, from torch's global generator."""
        rows = max(1, round(self.height_ratio * height))
        cols = max(1, round(self.width_ratio * width))
        top = int(torch.randint(height - rows + 1, ()).item())
        left = int(torch.randint(width - cols + 1, ()).item())
        return top, left, rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        top, left, rows, cols = self.region(x.shape[2], x.shape[3])
        keep = torch.ones_like(x[:1, :1])
        keep[:, :, top : top + rows, left : left + cols] = 0
        return x * keep

    def extra_repr(self) -> str:
        return f"height_ratio={self.height_ratio:.3f}, width_ratio={self.width_ratio:.3f}"
