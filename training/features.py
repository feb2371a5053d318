"""Embeddings of a test set, and its ranking metrics.

Two ways to match, by name: ``"cosine"`` on L2-normalised vectors (what the service indexes)
and ``"euclidean"`` on the raw flip-averaged concatenation (what the paper and BFE report).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from model import SONANet, embed, preprocess

from .data import ImageDataset, eval_loader
from .datasets import ReIDDataset, require_evaluable
from .evaluation import RankingMetrics, cosine_distance, euclidean_distance, evaluate, re_ranking
from .options import DISTANCES

__all__ = ["DISTANCES", "evaluate_net", "extract_features", "ranking_distances"]


def extract_features(
    net: SONANet,
    dataset: ImageDataset,
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 2,
    normalize: bool = True,
) -> torch.Tensor:
    """Flip-averaged embeddings ``[N, D]`` float32 on the CPU, in dataset order (L2-normalised
    unless ``normalize=False``)."""
    loader = eval_loader(dataset, batch_size, workers, pin_memory=device.type == "cuda")
    features = []
    for images, _, _ in loader:
        batch = preprocess.normalize(images.to(device, non_blocking=True))
        features.append(embed(net, batch, normalize=normalize).cpu())
    if not features:
        return torch.empty(0, net.embedding_dim)
    return torch.cat(features)


def evaluate_net(
    net: SONANet,
    data: ReIDDataset,
    device: torch.device,
    *,
    query: ImageDataset | None = None,
    gallery: ImageDataset | None = None,
    rerank: bool = False,
    distance: str = "cosine",
    batch_size: int = 64,
    workers: int = 2,
    preload: bool = True,
    map_max_rank: int | None = None,
) -> RankingMetrics:
    """Rank-k, mAP and mINP of ``net`` on ``data``'s query/gallery split (Market protocol).

    Pass ``query``/``gallery`` image sets to reuse already decoded images across calls;
    ``map_max_rank`` cuts each AP at that rank as BFE's evaluator does (default: full mAP).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    require_evaluable(data)
    size = net.config.input_size
    query = query or ImageDataset(data.query, size, preload=preload)
    gallery = gallery or ImageDataset(data.gallery, size, preload=preload)
    cosine = distance == "cosine"
    options = {"batch_size": batch_size, "workers": workers, "normalize": cosine}
    q = extract_features(net, query, device, **options)
    g = extract_features(net, gallery, device, **options)
    return evaluate(
        ranking_distances(q, g, distance, rerank=rerank),
        query.pids.numpy(),
        gallery.pids.numpy(),
        query.camids.numpy(),
        gallery.camids.numpy(),
        map_max_rank=map_max_rank,
    )


def ranking_distances(
    query: torch.Tensor, gallery: torch.Tensor, distance: str, *, rerank: bool = False
) -> np.ndarray:
    """The ``[num_query, num_gallery]`` distances a test set is ranked by.

    Re-ranking gets squared Euclidean distances, as Zhong et al.'s and BFE's code compute
    them (plain ones give other results), or ``1 - cos``, the same up to a factor on
    L2-normalised features; without it, plain and squared rank alike.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if distance == "cosine":
        measure = cosine_distance
    else:
        measure = functools.partial(euclidean_distance, squared=rerank)
    distances = measure(query, gallery)
    if rerank:
        distances = re_ranking(distances, measure(query, query), measure(gallery, gallery))
    return distances
