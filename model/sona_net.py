"""SONA-Net: a dilated ResNet with SONA blocks, a global branch and a DropBlock* local branch.

    image -> stem -> layer1 -> layer2 [-> SONA] -> layer3 [-> SONA] -> layer4 [-> SONA] (stride 8)
      global: GAP -> 1x1 conv -> BN -> ReLU -> 512-d -> classifier
      local:  Bottleneck -> DropBlock* -> GMP -> 1x1 conv -> BN -> ReLU -> 1024-d -> classifier

The local branch's DropBlock* can be swapped for nothing, the original DropBlock or BFE's
batch erasing, and SONA placed after stage 4, for the ablation of table 5 and section 3.4.

In eval the network returns the 1536-d concatenation (global, then local); in training it
returns both features (for the triplet losses) and both logits (for cross-entropy).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from .backbone import STAGE_CHANNELS, build_resnet
from .config import SONANetConfig
from .dropblock import DropBlock2d
from .erasing import BatchErasing2d, SquareDropBlock2d
from .sona import SONA

__all__ = ["SONANet", "SONAOutput", "embed"]


class SONAOutput(NamedTuple):
    """Training-mode output: features before and logits after each classifier."""

    global_features: torch.Tensor  # [B, global_dim]
    local_features: torch.Tensor  # [B, local_dim]
    global_logits: torch.Tensor  # [B, num_classes]
    local_logits: torch.Tensor  # [B, num_classes]


def _reduction(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv -> BN -> ReLU on a pooled [B, C, 1, 1] vector (the paper's feature reduction)."""
    conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _local_drop(config: SONANetConfig) -> nn.Module:
    if config.drop == "dropblock*":
        return DropBlock2d(config.drop_prob, config.block_height, config.block_width)
    if config.drop == "dropblock":
        return SquareDropBlock2d(config.drop_prob, config.block_height)
    if config.drop == "bfe":
        return BatchErasing2d()
    return nn.Identity()


def _classifier(in_features: int, num_classes: int) -> nn.Module:
    if num_classes == 0:
        return nn.Identity()
    linear = nn.Linear(in_features, num_classes)
    nn.init.normal_(linear.weight, std=0.001)
    nn.init.zeros_(linear.bias)
    return linear


class SONANet(nn.Module):
    """SONA-Net as configured by :class:`SONANetConfig`.

    ``load_backbone_weights=False`` skips reading ``config.backbone_weights`` (checkpoint
    loading overwrites every weight anyway, and the file need not exist where one serves).
    """

    def __init__(self, config: SONANetConfig, *, load_backbone_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        resnet = build_resnet(
            config.depth, config.backbone_weights if load_backbone_weights else None
        )
        _, c2, c3, c4 = STAGE_CHANNELS[config.depth]

        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.sona2 = SONA(c2, config.sona_reduction) if 2 in config.sona_stages else nn.Identity()
        self.layer3 = resnet.layer3
        self.sona3 = SONA(c3, config.sona_reduction) if 3 in config.sona_stages else nn.Identity()
        self.layer4 = resnet.layer4
        self.sona4 = SONA(c4, config.sona_reduction) if 4 in config.sona_stages else nn.Identity()

        self.global_reduction = _reduction(c4, config.global_dim)
        self.global_classifier = _classifier(config.global_dim, config.num_classes)

        self.local_block = Bottleneck(c4, c4 // Bottleneck.expansion)
        self.drop_block = _local_drop(config)
        self.local_reduction = _reduction(c4, config.local_dim)
        self.local_classifier = _classifier(config.local_dim, config.num_classes)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map, ``[B, C4, H/8, W/8]`` (C4 = 2048 for depth 50)."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.sona2(self.layer2(x))
        x = self.sona3(self.layer3(x))
        return self.sona4(self.layer4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | SONAOutput:
        fmap = self.backbone(x)
        global_features = self.global_reduction(F.adaptive_avg_pool2d(fmap, 1)).flatten(1)
        local_map = self.drop_block(self.local_block(fmap))
        local_features = self.local_reduction(F.adaptive_max_pool2d(local_map, 1)).flatten(1)
        if not self.training:
            return torch.cat([global_features, local_features], dim=1)
        return SONAOutput(
            global_features,
            local_features,
            self.global_classifier(global_features),
            self.local_classifier(local_features),
        )


@torch.inference_mode()
def embed(net: SONANet, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Flip-averaged, L2-normalised embeddings ``[B, 1536]`` float32: the vector one indexes.

    ``images`` are normalised ``[B, 3, H, W]`` tensors. The image and its mirror run as one
    batch; the network is put in eval mode for the call and restored after it.
    ``normalize=False`` keeps the raw average, which the paper matches by Euclidean distance.
    """
    was_training = net.training
    net.eval()
    try:
        features = net(torch.cat([images, images.flip(-1)]))
    finally:
        net.train(was_training)
    original, mirrored = features.float().chunk(2)
    average = (original + mirrored) / 2
    return F.normalize(average, dim=1) if normalize else average
