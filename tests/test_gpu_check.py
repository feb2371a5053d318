"""bench/gpu_check.py runs only where a GPU is lent: its code runs here at a tiny size on the
CPU (--smoke), so the day it meets a GPU it fails for a GPU's reasons, not a typo's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_gpu_check_smoke_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    result = gpu_check("--smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [r["precision"] for r in figures["train"]] == ["fp32", "bf16"]
    assert all(r["images_per_s"] > 0 for r in figures["train"])
    assert figures["agreement"]["fp32"]["min_cosine"] > 0.999  # the same weights on one CPU
    assert [r["batch"] for r in figures["embed"]] == [1, 4]
    assert figures["search"] and all(r["queries_per_s"] > 0 for r in figures["search"])


def test_gpu_check_refuses_without_a_gpu_unless_smoke() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full check would run")
    result = gpu_check()
    assert result.returncode != 0 and "no CUDA device" in result.stderr
