"""Dilated ResNet backbones and loading torchvision weights from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet50

from model import BackboneWeightsError, SONANet, SONANetConfig, build_resnet
from model.backbone import dilate_layer


def _trunk(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_dilation_rewrite_matches_torchvision_on_resnet50() -> None:
    native = resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    rewritten = resnet50().eval()
    rewritten.load_state_dict(native.state_dict())
    dilate_layer(rewritten.layer3, 1, 2)
    dilate_layer(rewritten.layer4, 2, 4)
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(_trunk(rewritten, x), _trunk(native, x))


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_output_stride_is_eight(depth: int) -> None:
    net = build_resnet(depth).eval()
    channels = 2048 if depth == 50 else 512
    with torch.no_grad():
        assert _trunk(net, torch.randn(1, 3, 128, 64)).shape == (1, channels, 16, 8)


@pytest.mark.parametrize(("depth", "constructor"), [(18, resnet18), (50, resnet50)])
def test_local_weights_file_lands_every_tensor(tmp_path: Path, depth: int, constructor) -> None:
    source = constructor()
    for tensor in source.state_dict().values():
        if tensor.is_floating_point():
            tensor.normal_()
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(source.state_dict(), path)

    loaded = build_resnet(depth, path)
    for name, tensor in source.state_dict().items():
        if not name.startswith("fc."):  # the ImageNet classifier: unused, so not loaded
            assert torch.equal(loaded.state_dict()[name], tensor), name

    # and through SONA-Net's config, into the network's own modules: every tensor but fc
    net = SONANet(SONANetConfig(depth=depth, backbone_weights=str(path), num_classes=5))
    ours = net.state_dict()
    renamed = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    checked = 0
    for name, tensor in source.state_dict().items():
        if name.startswith("fc."):
            continue
        prefix = next((p for p in renamed if name.startswith(p)), "")
        target = renamed[prefix] + name[len(prefix) :] if prefix else name
        assert torch.equal(ours[target], tensor), name
        checked += 1
    assert checked == len(source.state_dict()) - 2


def test_wrong_or_missing_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="does not fit"):
        build_resnet(50, path)
    with pytest.raises(BackboneWeightsError, match="not found"):
        build_resnet(50, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(BackboneWeightsError, match="cannot read"):
        build_resnet(18, garbage)


def test_the_imagenet_classifier_may_be_absent_but_no_used_weight_may(tmp_path: Path) -> None:
    """torchvision's own file has fc.weight and fc.bias, a trimmed one may not; SONA-Net never
    uses them. Anything that leaves a used weight unset or mis-shaped is refused by name."""
    state = resnet18().state_dict()
    trimmed = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(trimmed, tmp_path / "no-fc.pth")
    loaded = build_resnet(18, tmp_path / "no-fc.pth")
    assert torch.equal(loaded.state_dict()["layer4.1.bn2.weight"], state["layer4.1.bn2.weight"])

    missing = dict(trimmed)
    del missing["layer3.0.conv1.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(BackboneWeightsError, match=r"1 missing \(e.g. \['layer3.0.conv1.weight'\]"):
        build_resnet(18, tmp_path / "missing.pth")

    misshaped = dict(trimmed)
    misshaped["bn1.weight"] = torch.ones(3)
    torch.save(misshaped, tmp_path / "misshaped.pth")
    with pytest.raises(BackboneWeightsError, match=r"1 of the wrong shape \(e.g. \['bn1.weight'\]"):
        build_resnet(18, tmp_path / "misshaped.pth")
