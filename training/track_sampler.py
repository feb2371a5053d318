"""P x K batches that put people seen together into one batch: the batch's hard negatives.

Two tracks one camera saw at the same time are two different people, often alike in light,
size and background: the negatives a site's own footage offers for free. Each batch starts
from an identity drawn at random, takes up to half the batch's identities from those seen with
it (``companions``), and fills the rest at random; K images of each. An epoch holds about as
many images as the data (``len(pids) / (P K)`` batches). Draws depend only on (seed, epoch),
and under distributed training each rank keeps a disjoint share of every batch's identities,
as ``PKSampler`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from .sampler import indices_by_identity

__all__ = ["CompanionSampler"]


class CompanionSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int,
        images_per_id: int,
        companions: Mapping[int, Sequence[int]],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        index_by_pid = indices_by_identity(pids, ids_per_batch, world_size)
        self.pids = sorted(index_by_pid)
        self.index_by_pid = index_by_pid
        self.companions = {
            int(k): sorted(set(v) & set(index_by_pid)) for k, v in companions.items()
        }
        self.p, self.k = ids_per_batch, images_per_id
        self.batches = max(1, len(pids) // (ids_per_batch * images_per_id))
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def _draw(self, generator: torch.Generator, pool: Sequence[int], n: int) -> list[int]:
        order = torch.randperm(len(pool), generator=generator)[:n].tolist()
        return [pool[i] for i in order]

    def _images(self, generator: torch.Generator, pid: int) -> list[int]:
        indices = self.index_by_pid[pid]
        if len(indices) < self.k:
            picks = torch.randint(len(indices), (self.k,), generator=generator).tolist()
        else:
            picks = torch.randperm(len(indices), generator=generator)[: self.k].tolist()
        return [indices[i] for i in picks]

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        share = self.p // self.world_size
        for _ in range(self.batches):
            anchor = self.pids[int(torch.randint(len(self.pids), (1,), generator=generator))]
            chosen = [anchor]
            chosen += self._draw(generator, self.companions.get(anchor, []), self.p // 2 - 1)
            rest = [p for p in self.pids if p not in set(chosen)]
            chosen += self._draw(generator, rest, self.p - len(chosen))
            mine = chosen[self.rank * share : (self.rank + 1) * share]
            yield [i for pid in mine for i in self._images(generator, pid)]
