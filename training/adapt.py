"""Adapting a trained SONA-Net to a site's own tracks, without labels.

Training runs in rounds of ``recluster_every`` epochs. Before each round the identities are
chosen again: each track its own (``mode="tracks"``), or clusters of tracks on the current
model's features (``mode="clusters"``: ``pseudo.constrained_dbscan``, never merging two tracks
one camera saw at once). A round is an ordinary ``Trainer`` run started from the previous
round's weights (``TrainConfig.init``) with new classifiers for its identities, its batches
built around identities seen together (their hard negatives), at the rate the whole schedule
has at that round's start. Each round lives in ``OUT/roundN``; a round already finished is
not trained again, so an interrupted adaptation resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import load_checkpoint, save_checkpoint
from model.device import resolve_device

from .config import TrainConfig
from .pseudo import auto_eps, cluster_companions, constrained_dbscan, renumber, track_features
from .schedule import learning_rate
from .tracks import Track, cannot_link, to_dataset
from .trainer import Trainer

__all__ = ["MODES", "AdaptResult", "adapt"]

MODES = ("clusters", "tracks")


@dataclass(frozen=True)
class AdaptResult:
    checkpoint: Path  # servable: the last round's network
    rounds: list[dict]  # per round: identities, merged tracks, loss


def _labels(
    mode: str,
    checkpoint: Path,
    tracks: Sequence[Track],
    cannot: set[tuple[int, int]],
    eps_quantile: float,
    device: str,
) -> tuple[list[int], float | None]:
    if mode == "tracks":
        return list(range(len(tracks))), None
    net, _ = load_checkpoint(checkpoint, resolve_device(device))
    features = track_features(net, tracks, resolve_device(device))
    distances = np.clip(1.0 - features @ features.T, 0.0, 2.0)
    eps = auto_eps(distances, eps_quantile)
    return renumber(constrained_dbscan(distances, eps, 2, cannot).tolist()), eps


def adapt(
    init: str | Path,
    tracks: Sequence[Track],
    out: str | Path,
    config: TrainConfig,
    *,
    mode: str = "clusters",
    recluster_every: int = 2,
    eps_quantile: float = 0.02,
    device: str = "auto",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> AdaptResult:
    """Fine-tune ``init`` on ``tracks`` for ``config.epochs`` epochs; see the module's text."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if recluster_every < 1:
        raise ValueError("recluster_every must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracks = list(tracks)
    cannot = cannot_link(tracks)
    rounds = math.ceil(config.epochs / recluster_every)
    current = Path(init)
    summary = []
    for r in range(rounds):
        first = r * recluster_every
        epochs = min(recluster_every, config.epochs - first)
        labels, eps = _labels(mode, current, tracks, cannot, eps_quantile, device)
        identities = len(set(labels))
        round_config = dataclasses.replace(
            config,
            init=str(current),
            epochs=epochs,
            base_lr=learning_rate(config, first),
            warmup_epochs=0,
            milestones=(),
            seed=config.seed * 1000 + r,
            eval_every=0,
            val_identities=0,
            ids_per_batch=min(config.ids_per_batch, identities),
        )
        folder = out / f"round{r + 1}"
        trainer = Trainer(
            round_config,
            to_dataset(tracks, labels, name="site tracks"),
            folder,
            device=device,
            workers=0,
            progress=progress,
            log=lambda line: None,
            companions=cluster_companions(labels, cannot),
        )
        history = trainer.fit().history
        row = {
            "round": r + 1,
            "epochs": f"{first + 1}-{first + epochs}",
            "identities": identities,
            "tracks": len(tracks),
            "merged": len(tracks) - identities,
            "eps": eps,
            "lr": round_config.base_lr,
            "loss": history[-1]["loss"] if history else None,
        }
        summary.append(row)
        eps_text = "" if eps is None else f" (eps {eps:.3f})"
        log(
            f"round {r + 1}/{rounds}: epochs {row['epochs']}, {identities} identities from "
            f"{len(tracks)} tracks{eps_text}, loss {row['loss']:.3f}"
        )
        current = folder / "last.pt"
    net, _ = load_checkpoint(current)
    final = save_checkpoint(
        out / "adapted.pt",
        net,
        adapted_from=str(init),
        adapted_mode=mode,
        adapted_tracks=len(tracks),
        adapted_epochs=config.epochs,
        dataset="site tracks",
    )
    (out / "rounds.json").write_text(json.dumps(summary, indent=1) + "\n")
    return AdaptResult(final, summary)
