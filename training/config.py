"""Training recipes: the paper's (section 3.2) and a tiny one for CPUs and tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model import PRESETS, SONANetConfig

from .sampler import EPOCH_UNITS

__all__ = ["TRAIN_PRESETS", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data. Plain values, saved with the run.

    The learning rate follows the paper: ``warmup_start`` rising by ``warmup_start`` every
    ``warmup_step`` epochs until ``base_lr`` at ``warmup_epochs``, then ``base_lr``, divided by
    10 at each of ``milestones``, for ``epochs`` epochs in all.
    """

    model: SONANetConfig = field(default_factory=SONANetConfig)
    epochs: int = 400
    ids_per_batch: int = 32  # P
    images_per_id: int = 4  # K
    # What the schedule's epochs count (training/sampler.py): BFE's, which the paper follows
    epoch_unit: str = "identities"
    base_lr: float = 1e-3
    warmup_start: float = 1e-4
    warmup_step: int = 5
    warmup_epochs: int = 50
    milestones: tuple[int, ...] = (200, 300)
    weight_decay: float = 5e-4
    triplet_margin: float | None = None  # None: soft margin
    label_smoothing: float = 0.1
    cutout: int = 64  # side of the square, in input pixels
    cutout_prob: float = 0.5
    flip_prob: float = 0.5
    eval_every: int = 10  # epochs; 0: only at the end
    # How the evaluations match: the paper's Euclidean on raw features, or the service's cosine
    distance: str = "euclidean"
    # Training identities held out to choose best.pt (0: no best.pt; the test set never chooses)
    val_identities: int = 0
    seed: int = 0
    amp: bool = True  # CUDA only: bf16 where supported, else fp16 with a grad scaler
    channels_last: bool = True  # CUDA only
    # A checkpoint to start from (backbone, SONA blocks, feature layers; new classifiers)
    init: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.epochs < 1 or self.ids_per_batch < 2 or self.images_per_id < 2:
            raise ValueError("need epochs >= 1, ids_per_batch >= 2 and images_per_id >= 2")
        if self.epoch_unit not in EPOCH_UNITS:
            raise ValueError(f"epoch_unit must be one of {EPOCH_UNITS}, got {self.epoch_unit!r}")
        if self.distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be euclidean or cosine, got {self.distance!r}")
        if self.val_identities < 0:
            raise ValueError(f"val_identities must be >= 0, got {self.val_identities}")
        if self.triplet_margin is not None and self.triplet_margin <= 0:
            raise ValueError("triplet_margin must be positive (or None for the soft margin)")

    @property
    def batch_size(self) -> int:
        return self.ids_per_batch * self.images_per_id

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training configuration keys: {unknown}")
        data = dict(data)
        data["model"] = SONANetConfig.from_dict(data.get("model", {}))
        return cls(**data)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # Section 3.2: ResNet-50, 384 x 128, 32 x 4 batches, Adam with warm-up, 400 epochs.
    "paper": TrainConfig(),
    # Depth 18 at 64 x 32 from scratch, the schedule's shape scaled to 40 epochs: minutes on
    # two CPU cores for a synthetic set (at 128 x 64 the stride-8 maps make it 8x slower).
    # Its epochs cover every image: a synthetic set has few identities with many images each.
    "tiny": TrainConfig(
        model=PRESETS["tiny"],
        epochs=40,
        epoch_unit="images",
        ids_per_batch=8,
        images_per_id=4,
        base_lr=1e-3,
        warmup_start=2e-4,
        warmup_step=1,
        warmup_epochs=5,
        milestones=(20, 30),
        cutout=11,
        eval_every=10,
        distance="cosine",  # tiny models are served, and the service matches by cosine
    ),
    # Fine-tuning a trained network (``sona train --init``) on a site's own tracks: the
    # architecture is the checkpoint's (this one is replaced), a short schedule at a third of
    # the tiny preset's rate, so the start is adjusted rather than overwritten.
    "adapt": TrainConfig(
        model=PRESETS["tiny"],
        epochs=10,
        epoch_unit="images",
        ids_per_batch=8,
        images_per_id=4,
        base_lr=3e-4,
        warmup_start=1e-4,
        warmup_step=1,
        warmup_epochs=3,
        milestones=(7,),
        cutout=11,
        eval_every=0,
        distance="cosine",
    ),
}
