"""SONA-Net: the network, its building blocks, embeddings and checkpoints.

The names below load their module on first use (PEP 562), so that a light part such as
``model.config`` or ``model.variants`` can be imported without torch (``sona --help``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
