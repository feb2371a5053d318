"""How well a model finds a person again on a site's own footage, without labels.

Tracks stand in for identities. Each crop is a query; it must find crops of its own track
seen at least ``gap`` seconds away (not the near-copies of the frames around it) among every
crop of the other tracks. Rank-1 and mAP over those queries, beside two floors: raw pixels
(each crop at 64x32, centred, unit length) and a randomly initialised network. A person cut
into two tracks, or seen twice, counts as a miss for every method alike, so the figures are
lower bounds; they rank methods on one site, they are not a benchmark's figures.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model import PRESETS, SONANet, SONANetConfig
from model.preprocess import load_image, resize

from .data import ImageDataset
from .datasets import ImageRecord
from .features import extract_features
from .tracks import Track

__all__ = [
    "GapScore",
    "Row",
    "gap_scores",
    "network_features",
    "pixel_features",
    "random_network",
    "score_rows",
    "table",
]


@dataclass(frozen=True)
class GapScore:
    rank1: float
    mAP: float  # noqa: N815 - the name every re-ID paper uses
    chance: float  # rank-1 of a random ranking
    queries: int


def gap_scores(
    features: np.ndarray, track: np.ndarray, seconds: np.ndarray, gap: float
) -> GapScore:
    """Rank-1 and mAP of unit ``features`` (one row per crop, of track ``track`` seen at
    ``seconds``): each crop against all others but its own track's within ``gap`` seconds."""
    sims = features @ features.T
    hits, aps, chance = [], [], []
    for q in range(len(features)):
        allowed = ~((track == track[q]) & (np.abs(seconds - seconds[q]) < gap))
        allowed[q] = False
        own = allowed & (track == track[q])
        if not own.any():
            continue
        candidates = np.flatnonzero(allowed)
        order = candidates[np.argsort(-sims[q, candidates], kind="stable")]
        match = track[order] == track[q]
        ranks = np.flatnonzero(match) + 1
        hits.append(bool(match[0]))
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
        chance.append(own.sum() / allowed.sum())
    if not hits:
        return GapScore(float("nan"), float("nan"), float("nan"), 0)
    return GapScore(float(np.mean(hits)), float(np.mean(aps)), float(np.mean(chance)), len(hits))


def _records(tracks: Sequence[Track]) -> list[ImageRecord]:
    return [ImageRecord(c.path, i, t.camera - 1) for i, t in enumerate(tracks) for c in t.crops]


def pixel_features(tracks: Sequence[Track]) -> np.ndarray:
    """The raw-pixel floor: each crop at 64x32 RGB, centred, unit length."""
    x = np.stack(
        [resize(load_image(r.path), (64, 32)).float().reshape(-1).numpy() for r in _records(tracks)]
    )
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def network_features(
    net: SONANet, tracks: Sequence[Track], device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """Flip-averaged, unit-length embeddings of every crop, in track order."""
    images = ImageDataset(_records(tracks), net.config.input_size)
    return extract_features(net, images, device, batch_size=batch_size, workers=0).numpy()


def random_network(config: SONANetConfig | None, seed: int) -> SONANet:
    """A randomly initialised network of ``config``'s architecture (default: the tiny preset)."""
    base = config or PRESETS["tiny"]
    torch.manual_seed(seed)
    config = dataclasses.replace(base, num_classes=0, backbone_weights=None)
    return SONANet(config).eval()


def crop_labels(tracks: Sequence[Track]) -> tuple[np.ndarray, np.ndarray]:
    """Each crop's track index and time, in the order the feature functions use."""
    track = np.array([i for i, t in enumerate(tracks) for _ in t.crops])
    seconds = np.array([c.seconds for t in tracks for c in t.crops])
    return track, seconds


@dataclass(frozen=True)
class Row:
    """One method's scores: one per seed or checkpoint."""

    name: str
    scores: tuple[GapScore, ...]

    def stat(self, field: str) -> tuple[float, float | None]:
        values = [getattr(s, field) for s in self.scores]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def score_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], tracks, gap: float) -> list[Row]:
    """``(name, [features of each seed or checkpoint])`` to scored rows."""
    track, seconds = crop_labels(tracks)
    return [
        Row(name, tuple(gap_scores(f, track, seconds, gap) for f in features))
        for name, features in rows
    ]


def _cell(mean: float, std: float | None) -> str:
    text = f"{100 * mean:.2f}"
    return text + (f" ± {100 * std:.2f}" if std is not None else "")


def table(rows: Sequence[Row], width: int = 34) -> str:
    """Rank-1 and mAP (percent), mean ± standard deviation where a row has several runs."""
    lines = [f"{'method':<{width}} {'runs':>4} {'rank-1':>14} {'mAP':>14}"]
    for row in rows:
        r1, ap = row.stat("rank1"), row.stat("mAP")
        lines.append(
            f"{row.name[-width:]:<{width}} {len(row.scores):>4} {_cell(*r1):>14} {_cell(*ap):>14}"
        )
    chance = rows[0].scores[0].chance if rows else float("nan")
    lines.append(f"{'chance':<{width}} {'':>4} {_cell(chance, None):>14}")
    return "\n".join(lines)
