"""Schedule, PK sampler, losses and batch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.config import TRAIN_PRESETS, TrainConfig
from training.data import BatchAugment
from training.losses import ReIDLoss, batch_hard_triplet
from training.sampler import PKSampler
from training.schedule import learning_rate


def test_paper_schedule() -> None:
    paper = TRAIN_PRESETS["paper"]
    expected = {
        0: 1e-4,
        4: 1e-4,
        5: 2e-4,
        44: 9e-4,
        45: 1e-3,
        49: 1e-3,
        50: 1e-3,
        199: 1e-3,
        200: 1e-4,
        299: 1e-4,
        300: 1e-5,
        399: 1e-5,
    }
    for epoch, lr in expected.items():
        assert learning_rate(paper, epoch) == pytest.approx(lr), epoch
    assert paper.epochs == 400 and paper.batch_size == 128
    assert paper.weight_decay == 5e-4 and paper.label_smoothing == 0.1
    assert paper.model.depth == 50 and paper.model.input_size == (384, 128)


def test_train_config_round_trip() -> None:
    tiny = TRAIN_PRESETS["tiny"]
    assert TrainConfig.from_dict(tiny.to_dict()) == tiny
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"speed": 3})


def _pids(n_ids: int = 12, per_id: int = 5) -> list[int]:
    pids = [pid for pid in range(n_ids) for _ in range(per_id)]
    return [*pids, 99, 99]  # one identity with fewer than K images


def market_pids() -> list[int]:
    """Market-1501's training split: 751 identities, 12,936 images, 7 to 72 per identity."""
    counts = np.full(751, 17)
    counts[:169] += 1  # 12,936 in all
    counts[200:300] -= 10  # a spread like the real one: some with few images,
    counts[300:310] += 55  # a few with many,
    counts[310:385] += 6  # and the same total
    assert counts.sum() == 12_936 and counts.min() == 7 and counts.max() == 72
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


def test_an_epoch_visits_every_identity_once_as_bfe() -> None:
    """BFE's epoch, which the paper's 400 epochs count: 751 // 32 = 23 batches of 32 x 4."""
    pids = market_pids()
    sampler = PKSampler(pids, ids_per_batch=32, images_per_id=4, seed=0)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 23
    seen: list[int] = []
    for batch in batches:
        labels = [pids[i] for i in batch]
        assert len(batch) == 128 and len(set(batch)) == 128  # K distinct images each
        assert sorted({labels.count(pid) for pid in set(labels)}) == [4]
        seen += sorted(set(labels))
    assert len(seen) == len(set(seen)) == 23 * 32  # no identity twice in an epoch
    images = PKSampler(pids, 32, 4, seed=0, epoch_unit="images")
    assert 100 <= len(images) <= 115  # the other definition: every image about once


def test_identity_epoch_samples_small_identities_with_replacement() -> None:
    pids = _pids()
    batches = list(PKSampler(pids, ids_per_batch=13, images_per_id=3, seed=1))
    assert len(batches) == 1  # 13 identities, one batch
    small = [i for i in batches[0] if pids[i] == 99]
    assert len(small) == 3 and set(small) <= {60, 61}


def test_pk_batches_cover_every_image_about_once() -> None:
    pids = _pids()
    sampler = PKSampler(pids, ids_per_batch=4, images_per_id=3, seed=1, epoch_unit="images")
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        labels = [pids[i] for i in batch]
        counts = {pid: labels.count(pid) for pid in set(labels)}
        assert len(counts) == 4 and set(counts.values()) == {3}
    used = [i for batch in batches for i in batch]
    # 62 images in groups of 3: 12 identities x 2 groups + 1 group for the small one = 25
    # groups, 6 batches of 4 identities; an epoch sees nearly every image
    assert len(batches) == 6
    assert len(set(used)) >= 0.8 * len(pids)
    assert {pids[i] for i in used} == set(pids)


def test_pk_is_deterministic_per_seed_and_epoch() -> None:
    pids = _pids()
    first = PKSampler(pids, 4, 3, seed=1)
    again = PKSampler(pids, 4, 3, seed=1)
    assert list(first) == list(again)
    again.set_epoch(1)
    assert list(first) != list(again)


def test_pk_shards_identities_across_ranks() -> None:
    pids = _pids()
    for unit in ("identities", "images"):
        single = list(PKSampler(pids, 4, 3, seed=2, epoch_unit=unit))
        ranks = [
            list(PKSampler(pids, 4, 3, seed=2, rank=r, world_size=2, epoch_unit=unit))
            for r in range(2)
        ]
        assert len(single) == len(ranks[0]) > 0
        for whole, part0, part1 in zip(single, *ranks, strict=True):
            assert sorted(part0 + part1) == sorted(whole)
            assert not {pids[i] for i in part0} & {pids[i] for i in part1}
    with pytest.raises(ValueError, match="divide"):
        PKSampler(pids, 3, 3, world_size=2)


def reference_triplet(
    features: torch.Tensor, pids: torch.Tensor, margin: float | None
) -> torch.Tensor:
    losses = []
    for a in range(len(pids)):
        pos = [torch.dist(features[a], features[p]) for p in range(len(pids)) if pids[p] == pids[a]]
        neg = [torch.dist(features[a], features[n]) for n in range(len(pids)) if pids[n] != pids[a]]
        gap = max(pos) - min(neg)
        losses.append(F.softplus(gap) if margin is None else F.relu(gap + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("margin", [None, 0.3])
def test_batch_hard_triplet_matches_brute_force(margin: float | None) -> None:
    features = torch.randn(12, 5, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    torch.testing.assert_close(
        batch_hard_triplet(features, pids, margin).double(),
        reference_triplet(features.float(), pids, margin).double(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_loss_covers_both_branches_with_label_smoothing() -> None:
    from model import SONAOutput

    pids = torch.tensor([0, 0, 1, 1])
    out = SONAOutput(torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 2), torch.randn(4, 2))
    parts = ReIDLoss(None, 0.1)(out, pids)
    ce = sum(F.cross_entropy(lg, pids, label_smoothing=0.1) for lg in out[2:])
    tri = batch_hard_triplet(out[0], pids) + batch_hard_triplet(out[1], pids)
    torch.testing.assert_close(parts.total, ce + tri)


def test_augment_flips_and_cuts_per_sample() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 16), dtype=torch.uint8)
    plain = BatchAugment(cutout=0, cutout_prob=0, flip_prob=0)(images, torch.Generator())
    from model.preprocess import normalize

    torch.testing.assert_close(plain, normalize(images))

    flipped = BatchAugment(cutout=0, cutout_prob=0, flip_prob=0.5)(images, torch.Generator())
    is_flipped = [torch.equal(f, p.flip(-1)) for f, p in zip(flipped, plain, strict=True)]
    assert 10 < sum(is_flipped) < 54

    cut = BatchAugment(cutout=8, cutout_prob=0.5, flip_prob=0)(images, torch.Generator())
    zeroed = (cut == 0).all(dim=1)  # [B, H, W]
    sizes = zeroed.flatten(1).sum(1)
    assert 10 < int((sizes > 0).sum()) < 54
    assert int(sizes.max()) <= 64 and int(sizes.max()) == 64  # full 8x8 squares occur
    for mask in zeroed[sizes == 64]:
        rows, cols = mask.nonzero(as_tuple=True)
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7


def test_augment_is_reproducible_from_generator_state() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 16), dtype=torch.uint8)
    augment = BatchAugment(cutout=8)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = augment(images, generator)
    generator.set_state(state)
    assert torch.equal(first, augment(images, generator))
