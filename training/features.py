"""Embeddings of a test set, and its ranking metrics, with the service's exact vectors."""

from __future__ import annotations

import torch

from model import SONANet, embed
from model.preprocess import normalize

from .data import ImageDataset, eval_loader
from .datasets import ReIDDataset, require_evaluable
from .evaluation import RankingMetrics, cosine_distance, evaluate, re_ranking

__all__ = ["evaluate_net", "extract_features"]


def extract_features(
    net: SONANet,
    dataset: ImageDataset,
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 2,
) -> torch.Tensor:
    """Flip-averaged, L2-normalised embeddings ``[N, D]`` float32 on the CPU, in dataset order."""
    loader = eval_loader(dataset, batch_size, workers, pin_memory=device.type == "cuda")
    features = []
    for images, _, _ in loader:
        batch = normalize(images.to(device, non_blocking=True))
        features.append(embed(net, batch).cpu())
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
    batch_size: int = 64,
    workers: int = 2,
    preload: bool = True,
) -> RankingMetrics:
    """Rank-k, mAP and mINP of ``net`` on ``data``'s query/gallery split (Market protocol).

    Pass ``query``/``gallery`` image sets to reuse already decoded images across calls.
    """
    require_evaluable(data)
    size = net.config.input_size
    query = query or ImageDataset(data.query, size, preload=preload)
    gallery = gallery or ImageDataset(data.gallery, size, preload=preload)
    q = extract_features(net, query, device, batch_size=batch_size, workers=workers)
    g = extract_features(net, gallery, device, batch_size=batch_size, workers=workers)
    distances = cosine_distance(q, g)
    if rerank:
        distances = re_ranking(distances, cosine_distance(q, q), cosine_distance(g, g))
    return evaluate(
        distances,
        query.pids.numpy(),
        gallery.pids.numpy(),
        query.camids.numpy(),
        gallery.camids.numpy(),
    )
