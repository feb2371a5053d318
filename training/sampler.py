"""P x K batches: P identities, K images each, for batch-hard triplet mining.

What an epoch is decides how long a schedule written in epochs trains, so both common
definitions are here, by name:

* ``"identities"`` (BFE's ``RandomIdentitySampler``, which the paper builds on): an epoch
  visits every identity once, in random order, with K of its images (drawn without
  replacement, or with replacement when it has fewer than K), and cuts that sequence into
  batches of P identities, dropping the last incomplete one. Market-1501's 751 training
  identities make 23 batches of 32 x 4. The paper's 400-epoch schedule counts these.
* ``"images"`` (torchreid's and fast-reid's way): an epoch covers every training image about
  once: each identity's images are shuffled and cut into groups of K (the last group topped
  up by repetition), and each batch takes one group from each of P distinct identities drawn
  at random among those with groups left, until fewer than P remain. On Market-1501 that is
  about 100 batches of 32 x 4, four to five times as many.

The draws use a generator seeded by (seed, epoch), so an epoch's batches depend only on those
two numbers and a resumed run sees the same batches. Under distributed training every rank
makes the same draws and keeps a disjoint share of each batch's identities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch

from .options import EPOCH_UNITS

__all__ = ["EPOCH_UNITS", "PKSampler", "indices_by_identity"]


def indices_by_identity(
    pids: Sequence[int], ids_per_batch: int, world_size: int
) -> dict[int, list[int]]:
    """Each identity's dataset indices, after checking that P identities per batch can be
    drawn and shared evenly among ``world_size`` ranks (what every P x K sampler needs)."""
    if ids_per_batch % world_size:
        raise ValueError(
            f"ids_per_batch ({ids_per_batch}) must divide by world_size ({world_size})"
        )
    index_by_pid: dict[int, list[int]] = defaultdict(list)
    for index, pid in enumerate(pids):
        index_by_pid[int(pid)].append(index)
    if len(index_by_pid) < ids_per_batch:
        raise ValueError(f"{len(index_by_pid)} identities cannot fill batches of {ids_per_batch}")
    return index_by_pid


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of dataset indices, one list per step (use as a ``batch_sampler``).

    With ``world_size`` ranks, P must divide by it and each rank gets P / world_size
    identities per step.
    """

    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int = 32,
        images_per_id: int = 4,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_unit: str = "identities",
    ) -> None:
        if epoch_unit not in EPOCH_UNITS:
            raise ValueError(f"epoch_unit must be one of {EPOCH_UNITS}, got {epoch_unit!r}")
        index_by_pid = indices_by_identity(pids, ids_per_batch, world_size)
        self.groups = [index_by_pid[pid] for pid in sorted(index_by_pid)]
        self.ids_per_batch = ids_per_batch
        self.images_per_id = images_per_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_unit = epoch_unit
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[list[int]]]:
        """This epoch's batches, each a list of P groups of K indices (all ranks' shares)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.epoch_unit == "identities":
            return self._identity_batches(generator)
        return self._image_batches(generator)

    def _identity_batches(self, generator: torch.Generator) -> list[list[list[int]]]:
        k, p = self.images_per_id, self.ids_per_batch
        groups = []
        for pid in torch.randperm(len(self.groups), generator=generator).tolist():
            indices = self.groups[pid]
            if len(indices) < k:
                picks = torch.randint(len(indices), (k,), generator=generator).tolist()
            else:
                picks = torch.randperm(len(indices), generator=generator)[:k].tolist()
            groups.append([indices[i] for i in picks])
        return [groups[start : start + p] for start in range(0, len(groups) - p + 1, p)]

    def _image_batches(self, generator: torch.Generator) -> list[list[list[int]]]:
        k = self.images_per_id
        chunks: list[list[list[int]]] = []
        for indices in self.groups:
            if len(indices) < k:
                picks = torch.randint(len(indices), (k,), generator=generator).tolist()
            else:
                picks = torch.randperm(len(indices), generator=generator).tolist()
                picks += picks[: -len(picks) % k]  # top up the last group by repetition
            chunks.append([[indices[i] for i in picks[j : j + k]] for j in range(0, len(picks), k)])
        batches = []
        while True:
            available = [pid for pid, left in enumerate(chunks) if left]
            if len(available) < self.ids_per_batch:
                return batches
            chosen = torch.randperm(len(available), generator=generator)[: self.ids_per_batch]
            batches.append([chunks[available[i]].pop() for i in chosen.tolist()])

    def __len__(self) -> int:
        if self.epoch_unit == "identities":
            return len(self.groups) // self.ids_per_batch
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        share = self.ids_per_batch // self.world_size
        for batch in self._batches():
            mine = batch[self.rank * share : (self.rank + 1) * share]
            yield [index for group in mine for index in group]
