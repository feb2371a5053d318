"""The paper's learning-rate schedule as a per-epoch function."""

from __future__ import annotations

from .config import TrainConfig

__all__ = ["learning_rate"]


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``.

    Paper (section 3.2): 1e-4 rising by 1e-4 every 5 epochs to 1e-3 at epoch 50, 1e-3 until
    epoch 200, 1e-4 until 300, 1e-5 until 400.
    """
    if epoch < config.warmup_epochs:
        return min(config.base_lr, config.warmup_start * (epoch // config.warmup_step + 1))
    decays = sum(epoch >= m for m in config.milestones)
    return config.base_lr * 0.1**decays
