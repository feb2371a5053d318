"""Dilated ResNet backbone: torchvision's ResNet with layer3 and layer4 kept at stride 8.

Depth 50 uses torchvision's own ``replace_stride_with_dilation``. torchvision refuses
dilation for the BasicBlock of depths 18 and 34, so those are dilated here the same way
(first block of a layer at the previous dilation, the rest at the new one); a test checks
that this rewrite matches torchvision's on depth 50.

ImageNet weights come only from a local file (a torchvision ``resnet{depth}`` state dict):
nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["STAGE_CHANNELS", "BackboneWeightsError", "build_resnet", "dilate_layer"]

_CONSTRUCTORS = {18: resnet18, 34: resnet34, 50: resnet50}

#: Output channels of layer1..layer4 for each depth.
STAGE_CHANNELS = {
    18: (64, 128, 256, 512),
    34: (64, 128, 256, 512),
    50: (256, 512, 1024, 2048),
}


class BackboneWeightsError(ValueError):
    """The backbone weights file is missing, unreadable or does not fit the architecture."""


def dilate_layer(layer: nn.Sequential, first_dilation: int, dilation: int) -> None:
    """Turn a ResNet layer's stride into dilation, in place, as torchvision does."""
    for index, block in enumerate(layer):
        d = first_dilation if index == 0 else dilation
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        downsample = getattr(block, "downsample", None)
        if downsample is not None:
            downsample[0].stride = (1, 1)


def build_resnet(depth: int, weights: str | Path | None = None) -> ResNet:
    """A torchvision ResNet of ``depth`` with layer3/layer4 dilated (output stride 8).

    ``weights``: path to a torchvision ResNet state dict; every tensor SONA-Net uses must land,
    or a :class:`BackboneWeightsError` names which did not. The ImageNet classifier
    (``fc.*``), which SONA-Net never uses, may be there or not.
    """
    if depth not in _CONSTRUCTORS:
        raise ValueError(f"depth must be one of {sorted(_CONSTRUCTORS)}, got {depth}")
    constructor = _CONSTRUCTORS[depth]
    block = {18: BasicBlock, 34: BasicBlock, 50: Bottleneck}[depth]
    if block is Bottleneck:
        net = constructor(weights=None, replace_stride_with_dilation=[False, True, True])
    else:
        net = constructor(weights=None)
        dilate_layer(net.layer3, 1, 2)
        dilate_layer(net.layer4, 2, 4)
    if weights is not None:
        load_backbone_weights(net, weights)
    return net


def load_backbone_weights(net: ResNet, path: str | Path) -> None:
    """Load a torchvision state dict into ``net`` strictly, with one clear error on failure."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, or holds more than tensors: refuse either way
        raise BackboneWeightsError(f"cannot read backbone weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path} does not hold a state dict")
    unused = ("fc.",)  # the ImageNet classifier: SONA-Net's heads replace it
    state = {k: v for k, v in state.items() if not k.startswith(unused)}
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(unused)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(state) & set(expected)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise BackboneWeightsError(
            f"{path} does not fit a torchvision ResNet of this depth: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} of the wrong shape (e.g. {wrong[:3]})"
        )
    net.load_state_dict(state, strict=False)  # everything but fc.*, checked just above
