"""Batch-hard triplet loss and label-smoothed cross-entropy, on both branches.

Under torchrun the triplet loss mines among every rank's samples (training/gather.py); each
rank's anchors are its own, so the mean over ranks is the whole batch's loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model import SONAOutput

from .gather import gather_batch

__all__ = ["LossParts", "ReIDLoss", "batch_hard_triplet"]


def batch_hard_triplet(
    features: torch.Tensor,
    pids: torch.Tensor,
    margin: float | None = None,
    *,
    candidates: torch.Tensor | None = None,
    candidate_pids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    For each anchor in ``features``: the farthest positive and the closest negative among
    ``candidates`` (default: the anchors themselves), which must include the anchors.
    ``margin=None`` is the soft margin, log(1 + exp(d_ap - d_an)); otherwise a hinge.
    """
    features = features.float()
    if candidates is None:
        candidates, candidate_pids = features, pids
    dist = torch.cdist(features, candidates.float()).clamp_min(1e-12)
    same = pids.unsqueeze(1) == candidate_pids.unsqueeze(0)
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
        triplet = pids.new_zeros((), dtype=torch.float32)
        for features in (output.global_features, output.local_features):
            candidates, candidate_pids = gather_batch(features, pids)
            triplet = triplet + batch_hard_triplet(
                features,
                pids,
                self.margin,
                candidates=candidates,
                candidate_pids=candidate_pids,
            )
        ce = F.cross_entropy(
            output.global_logits.float(), pids, label_smoothing=self.label_smoothing
        ) + F.cross_entropy(output.local_logits.float(), pids, label_smoothing=self.label_smoothing)
        return LossParts(triplet + ce, triplet.detach(), ce.detach())
