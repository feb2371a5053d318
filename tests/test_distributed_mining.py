"""Under torchrun, hard triplets are mined among the whole batch, not each rank's share.

Two real processes on the gloo backend (CPU) each hold half of one P x K batch. The mean of
their losses, and the mean of their gradients (what DistributedDataParallel applies), must
equal one process's loss and gradient on the whole batch.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model import SONAOutput
from training.losses import ReIDLoss

P, K, DIM, CLASSES = 4, 4, 6, 8


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed batch (P identities x K images), and the weights of a linear 'network'."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(P * K, 5, generator=generator)
    pids = torch.arange(P).repeat_interleave(K)
    weight = torch.randn(5, DIM, generator=generator)
    head = torch.randn(DIM, CLASSES, generator=generator)
    return inputs, pids, weight, head


def loss_and_grad(inputs: torch.Tensor, pids: torch.Tensor) -> tuple[float, torch.Tensor]:
    _, _, weight, head = batch()
    weight.requires_grad_(True)
    features = inputs @ weight
    # Two branches that differ, so that each mines its own triplets.
    output = SONAOutput(features, features.tanh(), features @ head, features.tanh() @ head)
    loss = ReIDLoss()(output, pids).total
    loss.backward()
    return loss.item(), weight.grad


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        inputs, pids, _, _ = batch()
        share = slice(rank * P * K // 2, (rank + 1) * P * K // 2)  # the sampler's split
        loss, grad = loss_and_grad(inputs[share], pids[share])
        torch.save({"loss": loss, "grad": grad}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_mine_like_one_process(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    inputs, pids, _, _ = batch()
    loss, grad = loss_and_grad(inputs, pids)
    mean_loss = sum(r["loss"] for r in ranks) / 2
    mean_grad = sum(r["grad"] for r in ranks) / 2
    assert abs(mean_loss - loss) < 1e-5 * max(1.0, abs(loss))
    torch.testing.assert_close(mean_grad, grad, rtol=1e-4, atol=1e-6)


def test_each_rank_alone_would_mine_differently() -> None:
    """The check above can fail: mining within each half gives another loss."""
    inputs, pids, _, _ = batch()
    loss, _ = loss_and_grad(inputs, pids)
    halves = [loss_and_grad(inputs[s], pids[s])[0] for s in (slice(0, 8), slice(8, 16))]
    assert abs(sum(halves) / 2 - loss) > 1e-3
