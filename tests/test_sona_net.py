"""SONA-Net at the paper's configuration: shapes, sizes, and the flip-averaged embedding."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from model import PRESETS, SONANet, SONANetConfig, SONAOutput, embed

VARIANTS = [(), (2,), (3,), (2, 3)]


def sona_params(c: int) -> int:
    m = c // 2  # theta: conv + BN, g: conv + bias, p: conv + BN
    return c * m + 2 * m + c * m + m + m * c + 2 * c


def expected_params(stages: tuple[int, ...], num_classes: int) -> int:
    backbone = sum(p.numel() for p in resnet50().parameters()) - (2048 * 1000 + 1000)
    bottleneck = 2048 * 512 + 2 * 512 + 512 * 512 * 9 + 2 * 512 + 512 * 2048 + 2 * 2048
    reductions = (2048 * 512 + 2 * 512) + (2048 * 1024 + 2 * 1024)
    classifiers = (512 + 1024) * num_classes + 2 * num_classes
    sona = sum(sona_params({2: 512, 3: 1024}[s]) for s in stages)
    return backbone + sona + bottleneck + reductions + classifiers


@pytest.mark.parametrize("stages", VARIANTS, ids=lambda s: "sona" + "".join(map(str, s)) or "none")
def test_paper_configuration_shapes_and_sizes(stages: tuple[int, ...]) -> None:
    config = SONANetConfig(sona_stages=stages)  # depth 50, 384 x 128, 751 classes
    net = SONANet(config).eval()
    assert sum(p.numel() for p in net.parameters()) == expected_params(stages, 751)
    x = torch.randn(2, 3, 384, 128)
    with torch.no_grad():
        assert net.backbone(x).shape == (2, 2048, 48, 16)
        out = net(x)
    assert out.shape == (2, 1536)

    net.train()
    train_out = net(x)
    assert isinstance(train_out, SONAOutput)
    assert train_out.global_features.shape == (2, 512)
    assert train_out.local_features.shape == (2, 1024)
    assert train_out.global_logits.shape == (2, 751)
    assert train_out.local_logits.shape == (2, 751)


def test_eval_output_is_global_then_local() -> None:
    net = SONANet(PRESETS["tiny"]).eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        out = net(x)
        fmap = net.backbone(x)
        global_features = net.global_reduction(F.adaptive_avg_pool2d(fmap, 1)).flatten(1)
    torch.testing.assert_close(out[:, :512], global_features)


def test_no_classifiers_when_num_classes_is_zero() -> None:
    net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0)).train()
    out = net(torch.randn(2, 3, 128, 64))
    assert out.global_logits.shape == (2, 512)  # identity: the features themselves


def test_embed_is_the_normalised_mean_of_image_and_mirror() -> None:
    net = SONANet(PRESETS["tiny"]).train()
    images = torch.randn(3, 3, 128, 64)
    vectors = embed(net, images)
    assert net.training, "embed must restore the caller's mode"
    assert vectors.shape == (3, 1536) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    net.eval()
    with torch.no_grad():
        manual = F.normalize((net(images) + net(images.flip(-1))) / 2, dim=1)
    torch.testing.assert_close(vectors, manual)
    # a crop and its mirror have the same embedding
    torch.testing.assert_close(embed(net, images.flip(-1)), vectors, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_validation() -> None:
    config = SONANetConfig(sona_stages=[3, 2], input_size=[256, 128])
    assert config.sona_stages == (2, 3) and config.input_size == (256, 128)
    assert SONANetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        SONANetConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="depth"):
        SONANetConfig(depth=101)
    with pytest.raises(ValueError, match="sona_stages"):
        SONANetConfig(sona_stages=(5,))
    with pytest.raises(ValueError, match="drop"):
        SONANetConfig(drop="dropout")
