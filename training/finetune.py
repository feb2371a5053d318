"""Fine-tuning from a trained SONA-Net: the backbone, SONA blocks and both branches' feature
layers come from a checkpoint; the classifier heads are new, sized for the new identities.

Only what the checkpoint's weights fit can be fine-tuned: the same depth, SONA stages and
feature sizes. Settings without weights (input size, the local branch's drop) may change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from model import SONANet, SONANetConfig
from model.checkpoint import checkpoint_config, read_checkpoint

__all__ = ["CLASSIFIER_PREFIXES", "FinetuneError", "check_architecture", "init_config", "load_init"]

#: Weights that depend on the identities trained on: never carried over.
CLASSIFIER_PREFIXES = ("global_classifier.", "local_classifier.")
#: Configuration fields the weights' shapes depend on.
_SHAPED = ("depth", "sona_stages", "sona_reduction", "global_dim", "local_dim")


class FinetuneError(ValueError):
    """A checkpoint that cannot start the fine-tuning asked for; the message says why."""


def init_config(path: str | Path) -> SONANetConfig:
    """The architecture of the checkpoint at ``path`` (no backbone file: the weights come from
    the checkpoint)."""
    config = checkpoint_config(read_checkpoint(path), path)
    return dataclasses.replace(config, backbone_weights=None)


def check_architecture(path: str | Path, base: SONANetConfig, asked: SONANetConfig) -> None:
    """Refuse an ``asked`` architecture whose weights' shapes differ from ``base``'s (the
    checkpoint's), naming the first field that differs."""
    for name in _SHAPED:
        have, want = getattr(base, name), getattr(asked, name)
        if have != want:
            raise FinetuneError(
                f"{path} holds a network with {name} {_show(have)}; it cannot be fine-tuned "
                f"into {name} {_show(want)} (leave that option out to keep the checkpoint's)"
            )


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "+".join(map(str, value)) or "none"
    return str(value)


def load_init(net: SONANet, path: str | Path) -> int:
    """Copy every weight of the checkpoint at ``path`` into ``net`` except the classifiers;
    returns how many tensors were copied."""
    payload = read_checkpoint(path)
    check_architecture(path, checkpoint_config(payload, path), net.config)
    state = payload["state_dict"]
    own = net.state_dict()
    carried = {k: v for k, v in state.items() if k in own and not k.startswith(CLASSIFIER_PREFIXES)}
    missing = [k for k in own if not k.startswith(CLASSIFIER_PREFIXES) and k not in carried]
    wrong = [
        k for k, v in carried.items() if not isinstance(v, torch.Tensor) or v.shape != own[k].shape
    ]
    if missing or wrong:
        raise FinetuneError(
            f"{path}: its weights do not fit this network ({len(missing)} missing, "
            f"{len(wrong)} of another shape, e.g. {(missing + wrong)[:2]})"
        )
    net.load_state_dict(carried, strict=False)
    return len(carried)
