"""Pseudo-identities from tracks: DBSCAN merges tracks that look alike, never two tracks one
camera saw at once, and batches gather identities seen together."""

from __future__ import annotations

import numpy as np

from training.pseudo import auto_eps, cluster_companions, constrained_dbscan, renumber
from training.track_sampler import CompanionSampler


def distances_of(points: list[float]) -> np.ndarray:
    x = np.array(points, dtype=float)
    return np.abs(x[:, None] - x[None, :])


def test_dbscan_merges_close_tracks_and_leaves_the_rest_alone() -> None:
    d = distances_of([0.0, 0.1, 0.2, 5.0, 5.1, 9.0])
    labels = constrained_dbscan(d, eps=0.15)
    assert labels[0] == labels[1] == labels[2]  # a chain within eps
    assert labels[3] == labels[4] != labels[0]
    assert len(set(labels.tolist())) == 3  # the far one is an identity of its own


def test_tracks_seen_together_are_never_merged() -> None:
    d = distances_of([0.0, 0.05, 0.1, 5.0])
    labels = constrained_dbscan(d, eps=0.2, cannot=[(0, 2)])
    assert labels[0] != labels[2]
    assert labels[1] in (labels[0], labels[2])  # joined the nearer side it may join
    # and through a chain too: 1 links 0 and 2, but 0 and 2 cannot be one
    labels = constrained_dbscan(distances_of([0.0, 0.1, 0.2]), eps=0.15, cannot=[(0, 2)])
    assert labels[0] != labels[2]


def test_renumbered_labels_and_companions() -> None:
    assert renumber([7, 7, 3, 9, 3]) == [0, 0, 1, 2, 1]
    companions = cluster_companions([0, 0, 1, 2], [(0, 2), (1, 3)])
    assert companions == {0: [1, 2], 1: [0], 2: [0]}
    assert 0 < auto_eps(distances_of([0.0, 1.0, 3.0]), 0.5) <= 3.0


def test_batches_hold_identities_seen_together() -> None:
    pids = [p for p in range(40) for _ in range(2)]
    sampler = CompanionSampler(pids, 4, 2, {0: [1], 1: [0]}, seed=1)
    assert len(sampler) == len(pids) // 8
    for batch in sampler:
        assert len(batch) == 8 and len({pids[i] for i in batch}) == 4
    plain = CompanionSampler(pids, 4, 2, {}, seed=1)
    # how often a batch with identity 0 also holds 1, the one seen with it: at random about
    # 3 in 39 (0.08); drawn around companions about 0.45 (0.43 to 0.47 over seeds 0 to 4)
    assert _together(sampler, pids) > 0.25 > _together(plain, pids)


def _together(sampler: CompanionSampler, pids: list[int]) -> float:
    with_0 = with_both = 0
    for epoch in range(30):
        sampler.set_epoch(epoch)
        for batch in sampler:
            found = {pids[i] for i in batch}
            if 0 in found:
                with_0 += 1
                with_both += 1 in found
    return with_both / with_0
