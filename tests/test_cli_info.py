"""``sona info``: the installed entry point prints sizes and multiply-adds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torchvision.models import resnet50

from model import SONANetConfig
from model.info import _count_macs, describe


def sona(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "sona")  # the entry point of this environment
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


def test_mac_counter_agrees_with_the_published_resnet50_figure() -> None:
    # torchvision documents ResNet-50 at 224 x 224 as 4.09 GFLOPS (multiply-adds).
    net = resnet50().eval()
    assert abs(_count_macs(net, (224, 224)) / 1e9 - 4.09) < 0.02


def test_info_paper_configuration_prints_parameters_and_macs() -> None:
    result = sona("info", "--baseline")
    assert result.returncode == 0, result.stderr
    expected = describe(SONANetConfig())
    assert f"{expected.params / 1e6:.2f}M" in result.stdout
    assert f"{expected.macs / 1e9:.2f}" in result.stdout
    assert "layer4  2048 x 48 x 16" in result.stdout
    assert "ResNet-50 baseline" in result.stdout and "256x128" in result.stdout


def test_info_json_variants() -> None:
    result = sona("info", "--variants", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows][1:] == ["SONA2-Net", "SONA3-Net", "SONA2+3-Net"]
    macs = [r["macs"] for r in rows]
    assert macs == sorted(macs) and len(set(macs)) == 4  # each SONA adds cost
    assert all(r["macs_per_embedding"] == 2 * r["macs"] for r in rows)
    assert rows[0]["feature_maps"]["layer4"] == [2048, 48, 16]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "--input", "banana"], "HEIGHTxWIDTH"),
        (["info", "--checkpoint", "/nope.pt"], "not found"),
    ],
)
def test_bad_options_give_one_clear_line(args: list[str], message: str) -> None:
    result = sona(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_explains_every_option() -> None:
    result = sona("info", "--help")
    assert result.returncode == 0
    for option in ("--preset", "--checkpoint", "--depth", "--sona-stages", "--input", "--variants"):
        assert option in result.stdout
