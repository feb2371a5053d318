"""Second-order non-local attention (SONA), equations 1 to 3 of the paper.

For an input map x with c channels and hw positions, with m = c / r:

    Phi  = theta(x) Ibar theta(x)^T              (hw x hw),  Ibar = (1/m)(I - (1/m) 1 1^T)
    z    = softmax(Phi / sqrt(m), dim=-1) g(x)   (hw x m)
    SONA(x) = x + p(z)

Ibar is the centering matrix scaled by 1/m, so theta Ibar theta^T is the covariance
(over channels) between every pair of positions. Because (I - 11^T/m) is symmetric and
idempotent, Phi = (1/m) * theta_c theta_c^T with theta_c the position-wise mean-centred
theta. That turns the whole module into one scaled dot-product attention with
q = k = theta_c and scale 1 / (m * sqrt(m)), which runs as a fused kernel on CUDA and
never materialises the explicit m x m Ibar.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SONA"]


class SONA(nn.Module):
    """Second-order non-local attention block, residual around a covariance attention.

    ``p`` is a 1x1 convolution followed by a BatchNorm whose scale starts at zero, so the
    block starts as the identity (``zero_init=True``). A freshly inserted block then leaves
    an ImageNet-initialised backbone untouched at the start of training and learns how much
    attention to mix in, as non-local networks do; with ``zero_init=False`` the BatchNorm
    starts at the usual scale of one.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 2,
        *,
        negative_slope: float = 0.01,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if channels % reduction:
            raise ValueError(f"channels ({channels}) must be divisible by reduction ({reduction})")
        self.channels = channels
        self.reduction = reduction
        self.inner = channels // reduction
        m = self.inner
        self.theta = nn.Sequential(
            nn.Conv2d(channels, m, 1, bias=False),
            nn.BatchNorm2d(m),
            nn.LeakyReLU(negative_slope, inplace=True),
        )
        self.g = nn.Conv2d(channels, m, 1)
        self.p = nn.Sequential(nn.Conv2d(m, channels, 1, bias=False), nn.BatchNorm2d(channels))
        if zero_init:
            nn.init.zeros_(self.p[1].weight)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax-normalised covariance attention map, ``[B, hw, hw]`` (rows sum to 1)."""
        theta = self._centred_theta(x)
        logits = theta @ theta.transpose(1, 2) * self._scale
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self._centred_theta(x)  # [B, hw, m]
        g = self.g(x).flatten(2).transpose(1, 2)  # [B, hw, m]
        q = theta.unsqueeze(1)  # one attention head
        z = F.scaled_dot_product_attention(q, q, g.unsqueeze(1), scale=self._scale).squeeze(1)
        z = z.transpose(1, 2).reshape(b, self.inner, h, w)
        return x + self.p(z)

    @property
    def _scale(self) -> float:
        # 1/m from Ibar, 1/sqrt(m) from equation 2.
        return 1.0 / (self.inner * math.sqrt(self.inner))

    def _centred_theta(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [B, hw, m]
        return theta - theta.mean(dim=-1, keepdim=True)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
