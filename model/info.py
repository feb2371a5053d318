"""Size and cost of a network: parameters, multiply-adds, feature-map shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet50

from .config import SONANetConfig
from .sona_net import SONANet

__all__ = ["ModelInfo", "baseline_resnet50_info", "describe"]


@dataclass
class ModelInfo:
    """What ``sona info`` prints. Multiply-adds are for one image, one forward pass."""

    name: str
    input_size: tuple[int, int]
    params: int
    params_inference: int  # without the identity classifiers, which inference never runs
    macs: int
    embedding_dim: int
    feature_maps: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def macs_per_embedding(self) -> int:
        """A flip-averaged embedding runs the image and its mirror."""
        return 2 * self.macs


def _count_macs(net: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-adds of one eval forward (convolutions, matmuls, attention), via torch's counter."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, 3, *input_size))
    return counter.get_total_flops() // 2


def describe(config: SONANetConfig, name: str = "SONA-Net") -> ModelInfo:
    net = SONANet(config, load_backbone_weights=False).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    stages = ["stem", "layer1", "layer2", "sona2", "layer3", "sona3", "layer4", "sona4"]
    hooks = [
        getattr(net, stage).register_forward_hook(
            lambda _m, _i, out, stage=stage: shapes.__setitem__(stage, tuple(out.shape[1:]))
        )
        for stage in stages
        if not isinstance(getattr(net, stage), nn.Identity)
    ]
    macs = _count_macs(net, config.input_size)
    for hook in hooks:
        hook.remove()
    params = sum(p.numel() for p in net.parameters())
    classifiers = sum(
        p.numel() for m in (net.global_classifier, net.local_classifier) for p in m.parameters()
    )
    return ModelInfo(
        name=name,
        input_size=config.input_size,
        params=params,
        params_inference=params - classifiers,
        macs=macs,
        embedding_dim=config.embedding_dim,
        feature_maps=shapes,
    )


def baseline_resnet50_info(
    input_size: tuple[int, int] = (256, 128), num_classes: int = 751
) -> ModelInfo:
    """The plain ResNet-50 re-ID baseline: stride 32, GAP to a 2048-d feature, one classifier."""
    net = resnet50(weights=None)
    net.fc = nn.Linear(2048, num_classes)
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    classifier = sum(p.numel() for p in net.fc.parameters())
    net.fc = nn.Identity()
    macs = _count_macs(net, input_size)
    return ModelInfo(
        name="ResNet-50 baseline",
        input_size=input_size,
        params=params,
        params_inference=params - classifier,
        macs=macs,
        embedding_dim=2048,
    )
