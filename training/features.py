"""Embeddings of a test set, and its ranking metrics.

Two ways to match, by name: ``"cosine"`` on L2-normalised vectors (what the service indexes)
and ``"euclidean"`` on the raw flip-averaged concatenation (what the paper and BFE report).
"""

from __future__ import annotations

import torch

from model import SONANet, embed, preprocess

from .data import ImageDataset, eval_loader
from .datasets import ReIDDataset, require_evaluable
from .evaluation import RankingMetrics, cosine_distance, euclidean_distance, evaluate, re_ranking
from .options import DISTANCES

__all__ = ["DISTANCES", "evaluate_net", "extract_features"]


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
) -> RankingMetrics:
    """Rank-k, mAP and mINP of ``net`` on ``data``'s query/gallery split (Market protocol).

    Pass ``query``/``gallery`` image sets to reuse already decoded images across calls.
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
    measure = cosine_distance if cosine else euclidean_distance
    distances = measure(q, g)
    if rerank:
        distances = re_ranking(distances, measure(q, q), measure(g, g))
    return evaluate(
        distances,
        query.pids.numpy(),
        gallery.pids.numpy(),
        query.camids.numpy(),
        gallery.camids.numpy(),
    )
