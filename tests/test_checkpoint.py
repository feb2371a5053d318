"""Checkpoints: bit-identical round trip; malicious and mismatched files refused."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
import torch

from model import PRESETS, CheckpointError, SONANet, embed, load_checkpoint, save_checkpoint


@pytest.fixture
def tiny_net() -> SONANet:
    net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=7))
    with torch.no_grad():  # move every BatchNorm off its defaults so the check means something
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return net.eval()


def test_round_trip_gives_bit_identical_embeddings(tmp_path: Path, tiny_net: SONANet) -> None:
    path = save_checkpoint(tmp_path / "net.pt", tiny_net, epoch=3, dataset="synthetic")
    loaded, meta = load_checkpoint(path)
    assert meta == {"epoch": 3, "dataset": "synthetic"}
    assert loaded.config == tiny_net.config and not loaded.training
    images = torch.randn(4, 3, 128, 64)
    assert torch.equal(embed(loaded, images), embed(tiny_net, images))


def test_checkpoint_from_a_config_with_backbone_weights_loads_without_the_file(
    tmp_path: Path, tiny_net: SONANet
) -> None:
    net = SONANet(
        dataclasses.replace(tiny_net.config, backbone_weights="/nowhere/r18.pth"),
        load_backbone_weights=False,
    )
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "a.pt", net))
    assert loaded.config.backbone_weights == "/nowhere/r18.pth"


class _Payload:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_checkpoint_is_refused_and_runs_nothing(
    tmp_path: Path, tiny_net: SONANet
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {
        "format": "sona-net",
        "format_version": 1,
        "config": tiny_net.config.to_dict(),
        "state_dict": tiny_net.state_dict(),
        "meta": {"x": _Payload(marker)},
    }
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"refused.*could run arbitrary code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_mismatched_weights_are_refused(tmp_path: Path, tiny_net: SONANet) -> None:
    path = save_checkpoint(tmp_path / "net.pt", tiny_net)
    payload = torch.load(path, weights_only=True)
    payload["config"]["sona_stages"] = [2, 3]  # weights have no sona3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"do not match.*missing.*sona3"):
        load_checkpoint(path)

    payload["config"]["sona_stages"] = [2]
    payload["config"]["num_classes"] = 9  # classifier shapes differ
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable checkpoint"),
        (b"\x00garbage" * 10, "not a readable checkpoint"),
        ({"state_dict": {}}, "not a SONA-Net checkpoint"),
        ({"format": "sona-net", "format_version": 99}, "version"),
        (
            {
                "format": "sona-net",
                "format_version": 1,
                "config": {"depth": 7},
                "state_dict": {},
                "meta": {},
            },
            "invalid configuration",
        ),
    ],
)
def test_broken_files_are_refused_clearly(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "broken.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_file_and_unserialisable_meta(tmp_path: Path, tiny_net: SONANet) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", tiny_net, when=object())
    assert not list(tmp_path.iterdir()), "a failed save leaves nothing behind"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_a_checkpoint_gets_the_mode_of_any_new_file(
    tmp_path: Path, tiny_net: SONANet, umask: int, mode: int
) -> None:
    """Not the temporary file's 0o600: the Docker image's user must read a mounted checkpoint."""
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "a.pt", tiny_net)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_file_that_is_no_checkpoint_says_so_not_keyerror(
    tmp_path: Path, tiny_net: SONANet
) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"not a file written by torch\.save") as caught:
        load_checkpoint(text)
    assert "KeyError" not in str(caught.value)
    whole = save_checkpoint(tmp_path / "whole.pt", tiny_net).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="damaged or cut short") as caught:
        load_checkpoint(cut)
    assert len(str(caught.value)) < 300
