"""All ranks' features for hard-triplet mining, with gradients to this rank's own part.

Under DistributedDataParallel each process holds ids_per_batch / world_size identities of the
batch. Batch-hard mining must look among the whole batch (the recipe's 32 x 4), so every rank
gathers every rank's features and labels. The gather is differentiable: in the backward pass
the gradients all ranks computed for each slice are summed and each rank keeps its own slice,
so a sample chosen as another rank's hardest negative still receives that gradient, and the
averaged DDP gradient equals the single-process gradient on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["gather_batch"]


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's gradient for every slice, summed
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_batch(features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(all ranks' features, all ranks' labels), rank order; the inputs when not distributed.

    Every rank must hold the same number of samples (the P x K sampler's shares do).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, pids
    labels = [torch.empty_like(pids) for _ in range(dist.get_world_size())]
    dist.all_gather(labels, pids.contiguous())
    return _AllGather.apply(features), torch.cat(labels)
