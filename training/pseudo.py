"""Pseudo-identities for a site's tracks: clusters of tracks that look like one person, never
joining two tracks one camera saw at the same time.

Tracks are clustered on the current model's features (each track's mean crop embedding) by
DBSCAN (Ester et al. 1996) on cosine distances, as SpCL and Cluster Contrast cluster
instances, with one change: a track joins a cluster only if no member of it is a cannot-link
partner (``tracks.cannot_link``). Tracks DBSCAN leaves alone stay identities of their own
(a track is one person either way). ``eps`` defaults to a quantile of the pairwise distances,
so that it follows the model's scale as training moves it. scikit-learn is not a dependency
for sixty lines on a distance matrix of a few hundred tracks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from model import SONANet

from .track_eval import network_features
from .tracks import Track

__all__ = [
    "auto_eps",
    "cluster_companions",
    "constrained_dbscan",
    "renumber",
    "track_features",
]


def track_features(net: SONANet, tracks: Sequence[Track], device: torch.device) -> np.ndarray:
    """Each track's mean crop embedding, unit length: ``[tracks, D]``."""
    crops = network_features(net, tracks, device)
    sizes = np.cumsum([0] + [len(t.crops) for t in tracks])
    means = np.stack([crops[a:b].mean(axis=0) for a, b in itertools.pairwise(sizes)])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)


def auto_eps(distances: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the distances between distinct tracks."""
    upper = distances[np.triu_indices(len(distances), k=1)]
    return float(np.quantile(upper, quantile)) if upper.size else 0.0


def constrained_dbscan(
    distances: np.ndarray,
    eps: float,
    min_samples: int = 2,
    cannot: Iterable[tuple[int, int]] = (),
) -> np.ndarray:
    """Cluster labels 0..n-1 for a precomputed ``[n, n]`` distance matrix: DBSCAN's clusters
    (``min_samples`` counts the point itself), a cannot-link pair never in one cluster, and
    every point DBSCAN calls noise a cluster of its own."""
    n = len(distances)
    forbidden: list[set[int]] = [set() for _ in range(n)]
    for i, j in cannot:
        forbidden[i].add(j)
        forbidden[j].add(i)
    neighbours = [np.flatnonzero(distances[i] <= eps) for i in range(n)]
    core = np.array([len(nb) >= min_samples for nb in neighbours])
    labels = np.full(n, -1)
    cluster = 0
    for start in np.argsort([-len(nb) for nb in neighbours], kind="stable"):
        if labels[start] != -1 or not core[start]:
            continue
        labels[start] = cluster
        members, blocked = {int(start)}, set(forbidden[start])
        queue = [int(start)]
        while queue:
            point = queue.pop(0)
            # nearest first: a cannot-link conflict keeps the closer of two tracks
            for other in sorted(neighbours[point], key=lambda o: distances[point, o]):
                other = int(other)
                if labels[other] != -1 or other in blocked:
                    continue
                labels[other] = cluster
                members.add(other)
                blocked |= forbidden[other]
                if core[other]:
                    queue.append(other)
        cluster += 1
    for i in np.flatnonzero(labels == -1):
        labels[i] = cluster
        cluster += 1
    return labels


def cluster_companions(
    labels: Sequence[int], cannot: Iterable[tuple[int, int]]
) -> dict[int, list[int]]:
    """For each cluster, the clusters holding a track seen at the same time as one of its own."""
    found: dict[int, set[int]] = {int(label): set() for label in labels}
    for i, j in cannot:
        a, b = int(labels[i]), int(labels[j])
        found[a].add(b)
        found[b].add(a)
    return {k: sorted(v) for k, v in found.items()}


def renumber(labels: Sequence[int]) -> list[int]:
    """Labels numbered 0, 1, ... in order of first appearance (as ``to_dataset`` numbers)."""
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in labels]
