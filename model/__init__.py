"""SONA-Net: the network, its building blocks, embeddings and checkpoints."""

from .backbone import BackboneWeightsError, build_resnet
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import PRESETS, SONANetConfig
from .dropblock import DropBlock2d
from .sona import SONA
from .sona_net import SONANet, SONAOutput, embed
from .variants import VARIANTS, apply_variant

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
