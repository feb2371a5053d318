"""SONA-Net: the network, its building blocks, embeddings and checkpoints.

The names below load their module on first use (PEP 562), so that a light part such as
``model.config`` or ``model.variants`` can be imported without torch (``sona --help``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backbone import BackboneWeightsError, build_resnet
    from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from .config import PRESETS, SONANetConfig
    from .dropblock import DropBlock2d
    from .sona import SONA
    from .sona_net import SONANet, SONAOutput, embed
    from .variants import VARIANTS, apply_variant

#: Where each public name lives.
_HOMES = {
    "BackboneWeightsError": "backbone",
    "build_resnet": "backbone",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "PRESETS": "config",
    "SONANetConfig": "config",
    "DropBlock2d": "dropblock",
    "SONA": "sona",
    "SONANet": "sona_net",
    "SONAOutput": "sona_net",
    "embed": "sona_net",
    "VARIANTS": "variants",
    "apply_variant": "variants",
}

__all__ = [
    "PRESETS",
    "SONA",
    "VARIANTS",
    "BackboneWeightsError",
    "CheckpointError",
    "DropBlock2d",
    "SONANet",
    "SONANetConfig",
    "SONAOutput",
    "apply_variant",
    "build_resnet",
    "embed",
    "load_checkpoint",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
