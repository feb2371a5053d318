"""Batch-hard triplet loss and label-smoothed cross-entropy, on both branches."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model import SONAOutput

__all__ = ["LossParts", "ReIDLoss", "batch_hard_triplet"]


def batch_hard_triplet(
    features: torch.Tensor, pids: torch.Tensor, margin: float | None = None
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    For each anchor: the farthest positive and the closest negative in the batch.
    ``margin=None`` is the soft margin, log(1 + exp(d_ap - d_an)); otherwise a hinge.
    """
    features = features.float()
    dist = torch.cdist(features, features).clamp_min(1e-12)
    same = pids.unsqueeze(0) == pids.unsqueeze(1)
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)
    gap = hardest_positive - hardest_negative
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


class LossParts(NamedTuple):
    total: torch.Tensor
    triplet: torch.Tensor  # both branches summed
    cross_entropy: torch.Tensor  # both branches summed


class ReIDLoss(nn.Module):
    """Triplet + label-smoothed cross-entropy on the global and the local branch."""

    def __init__(self, margin: float | None = None, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.margin = margin
        self.label_smoothing = label_smoothing

    def forward(self, output: SONAOutput, pids: torch.Tensor) -> LossParts:
        triplet = batch_hard_triplet(output.global_features, pids, self.margin)
        triplet = triplet + batch_hard_triplet(output.local_features, pids, self.margin)
        ce = F.cross_entropy(
            output.global_logits.float(), pids, label_smoothing=self.label_smoothing
        ) + F.cross_entropy(output.local_logits.float(), pids, label_smoothing=self.label_smoothing)
        return LossParts(triplet + ce, triplet.detach(), ce.detach())
