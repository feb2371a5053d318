"""``sona train --init``: a trained network's weights carried over (classifiers new), the
checkpoint's architecture kept, and an architecture it cannot give refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import load_checkpoint
from tests.adapt_support import exported_clip, refused, sona
from tests.service_support import make_checkpoint
from training.finetune import CLASSIFIER_PREFIXES


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finetune")
    return make_checkpoint(root / "start.pt", seed=3), exported_clip(root)


def test_fine_tuning_starts_from_the_checkpoint(start, tmp_path: Path) -> None:
    checkpoint, data = start
    result = sona(
        "train", "--init", str(checkpoint), "--dataset", "custom", "--data", str(data),
        "--output", str(tmp_path / "run"), "--epochs", "1", "--batch", "2x4", "--quiet",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    before, _ = load_checkpoint(checkpoint)
    after, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    assert after.config.depth == before.config.depth
    assert after.config.num_classes == 2  # a head for each track
    old, new = before.state_dict(), after.state_dict()
    # one epoch moved the weights, but not far from where they started (a random start
    # would be as far from them as two random networks are)
    key = "layer1.0.conv1.weight"
    moved = (new[key] - old[key]).norm() / old[key].norm()
    assert 0 < moved < 0.5
    assert not any(k.startswith(CLASSIFIER_PREFIXES) for k in old)


def test_an_architecture_the_checkpoint_cannot_give_is_refused(start, tmp_path: Path) -> None:
    checkpoint, data = start
    common = ["--dataset", "custom", "--data", str(data), "--quiet", "--device", "cpu"]
    result = sona(
        "train", "--init", str(checkpoint), *common, "--output", str(tmp_path / "a"),
        "--depth", "34",
    )  # fmt: skip
    refused(result, "depth 18")
    assert not (tmp_path / "a").exists()
    result = sona(
        "train", "--init", str(checkpoint), *common, "--output", str(tmp_path / "b"),
        "--sona-stages", "3",
    )  # fmt: skip
    refused(result, "cannot be fine-tuned")
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_text("hello")
    result = sona(
        "train", "--init", str(not_a_checkpoint), *common, "--output", str(tmp_path / "c")
    )
    refused(result, "not a readable checkpoint")
    result = sona("train", "--preset", "adapt", *common, "--output", str(tmp_path / "d"))
    refused(result, "--init")
