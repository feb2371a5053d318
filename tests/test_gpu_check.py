"""bench/gpu_check.py runs only where a GPU is lent: its code runs here at a tiny size on the
CPU (--smoke), so the day it meets a GPU it fails for a GPU's reasons, not a typo's; and its
figures survive a failing section, a hanging one, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["env", "flops", "agreement", "train", "encoder", "search", "encoder_more", "compile"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        cwd=ROOT,
        env=ENV,
    )


def statuses(figures: dict) -> dict[str, str]:
    return {name: record["status"] for name, record in figures["sections"].items()}


@pytest.mark.slow
def test_gpu_check_smoke_through_the_script_keeps_every_section(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke", "--budget", "1200"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env={**ENV, "OUT": str(tmp_path), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    log = (tmp_path / "gpu_check.log").read_text()
    assert figures["finished"] is True
    assert statuses(figures) == dict.fromkeys(SECTIONS, "ok")
    assert all(f"== {name}: ok" in log for name in SECTIONS)  # the whole output, teed
    assert figures["env"]["torch"] and "cuda_available" in figures["env"]

    flops = figures["flops"]
    # training (forward and backward of one image) against two forwards (image and mirror)
    assert 1.0 < flops["gflop_per_training_image"] / flops["gflop_per_embedding"] < 2.5

    # the checked network's SONA blocks add to their input, so the agreement sees them
    ratios = figures["agreement_reference"]["sona_added_norm_ratio"]
    assert ratios and all(r > 0.05 for r in ratios.values())
    rows = {row["encoder"].split(" (")[0]: row for row in figures["agreement"]}
    assert rows["fp32 eager"]["min_cosine"] > 0.999  # the same weights on one CPU
    off = next(row for row in figures["agreement"] if "SONA switched off" in row["encoder"])
    assert off["min_cosine"] < rows["fp32 eager"]["min_cosine"] - 0.01

    assert [r["precision"] for r in figures["train"]] == ["fp32", "tf32", "bf16"]
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 for r in figures["train"])
    for section, precisions in (("encoder", ["bf16", "fp32"]), ("encoder_more", ["tf32", "fp16"])):
        cells = [(r["precision"], r["batch"]) for r in figures[section]]
        assert cells == [(p, b) for p in precisions for b in (1, 3)]
        assert all(r["embeddings_per_s"] > 0 and r["tflops"] > 0 for r in figures[section])

    measured = [r for r in figures["search"] if "queries_per_s" in r]
    device_row = next(r for r in measured if r["engine"] == "torch fp32 matmul + topk (cpu)")
    assert device_row["latency_1_ms"] > 0 and device_row["latency_32_ms"] > 0
    assert device_row["recall@10"] >= 0.9

    assert [r["batch"] for r in figures["compile"]] == [2, 3]
    assert all(r["agreement"]["min_cosine"] > 0.999 for r in figures["compile"])


@pytest.mark.slow
def test_failing_sections_leave_the_earlier_and_later_ones_and_the_budget_trims(
    tmp_path: Path,
) -> None:
    out = tmp_path / "gpu_check.json"
    failing = ["flops", "train", "search"]
    args = [f"--fail-section={name}" for name in failing]
    # no budget: the optional sections are skipped; a long grace: the others never time out
    result = gpu_check("--smoke", "--out", str(out), "--budget", "0", "--grace", "1200", *args)
    assert result.returncode == 1, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["finished"] is True
    assert statuses(figures) == {
        "env": "ok",
        "flops": "error",
        "agreement": "ok",
        "train": "error",
        "encoder": "ok",
        "search": "error",
        "encoder_more": "skipped",  # optional: no budget left
        "compile": "skipped",
    }
    for name in failing:
        assert "injected failure" in figures["sections"][name]["error"]
    assert figures["env"]["python"]
    assert len(figures["agreement"]) == 5 and "error" not in figures["agreement"][0]
    # the encoder still measured; with no FLOP count its TFLOP/s is left empty, not made up
    assert all(r["embeddings_per_s"] > 0 and r["tflops"] is None for r in figures["encoder"])


@pytest.mark.slow
def test_every_section_error_row_a_hang_stopped_by_its_guard_and_a_compile_row_error(
    tmp_path: Path,
) -> None:
    out = tmp_path / "gpu_check.json"
    failing = ["flops", "agreement", "train", "encoder", "search", "encoder_more"]
    result = gpu_check(
        "--smoke",
        "--out",
        str(out),
        "--budget",
        "1200",
        "--hang-section=env",
        "--section-cap=env=1",
        "--fail-section=compile:fp32/2",
        *[f"--fail-section={name}" for name in failing],
    )
    assert result.returncode == 1, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert statuses(figures) == {"env": "timed out"} | dict.fromkeys(failing, "error") | {
        "compile": "ok"
    }
    assert figures["sections"]["env"]["seconds"] < 30
    assert all("error" in figures["sections"][name] for name in failing)
    first, second = figures["compile"]
    assert first["batch"] == 2 and "injected failure" in first["error"]
    assert second["batch"] == 3 and second["embeddings_per_s"] > 0  # the next one still ran
    assert "agreement" not in second  # no CPU reference: that section failed
    assert figures["sections"]["compile"]["row_errors"] == 1


def wait_for(out: Path, done, process: subprocess.Popen, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before the signal was sent"
        if out.exists():
            figures = json.loads(out.read_text())  # a whole file at every moment
            if done(figures):
                return figures
        time.sleep(0.05)
    raise AssertionError("the first section was never written")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_run_stopped_part_way_leaves_valid_figures(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "gpu_check.json"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=ENV,
    )
    try:
        wait_for(out, lambda f: f["sections"].get("env", {}).get("status") == "ok", process)
        process.send_signal(signum)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    figures = json.loads(out.read_text())
    assert figures["finished"] is False
    assert figures["sections"]["env"]["status"] == "ok" and figures["env"]["torch"]
    if signum == signal.SIGTERM:
        assert code == 143
        after = [record["status"] for name, record in figures["sections"].items() if name != "env"]
        assert after and set(after) <= {"terminated", "not run: terminated"}
        assert figures["sections"]["compile"]["status"] == "not run: terminated"
    else:
        assert code == -signal.SIGKILL


def test_gpu_check_refuses_without_a_gpu_unless_smoke_but_records_the_machine(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full check would run")
    out = tmp_path / "gpu_check.json"
    result = gpu_check("--out", str(out))
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    figures = json.loads(out.read_text())
    assert statuses(figures) == {"env": "ok", "flops": "ok"}
    assert figures["env"]["cuda_available"] is False


def test_flops_of_the_paper_configuration_are_counted_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    result = gpu_check("--flops-only", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    flops = json.loads(out.read_text())["flops"]
    # ResNet-50 at 384 x 128, stride 8, two SONA blocks: tens of GFLOP a forward; training
    # (forward and backward, one image) against an embedding (two forwards): about 3 / 2
    assert 60 < flops["gflop_per_embedding"] < 150
    assert 1.3 < flops["gflop_per_training_image"] / flops["gflop_per_embedding"] < 1.7


def test_a_project_that_does_not_import_still_records_the_machine(tmp_path: Path) -> None:
    broken = tmp_path / "site" / "model"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('a planted import failure')\n")
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(broken.parent)},
    )
    assert result.returncode == 1 and "planted import failure" in result.stderr
    figures = json.loads(out.read_text())
    assert statuses(figures) == {"env": "ok"} and figures["env"]["torch"]


def test_a_log_reader_gone_first_costs_no_figure(tmp_path: Path) -> None:
    """The output's reader (tee) may die before the check: prints fail, the figures do not."""
    out = tmp_path / "gpu_check.json"
    failing = [f"--fail-section={name}" for name in SECTIONS[2:]]
    script = str(ROOT / "bench" / "gpu_check.py")
    process = subprocess.Popen(
        [sys.executable, script, "--smoke", "--out", str(out), *failing],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
    )
    process.stdout.close()  # nobody reads the output any more
    process.stderr.close()
    process.wait(timeout=600)
    figures = json.loads(out.read_text())
    assert figures["finished"] is True
    assert statuses(figures) == {"env": "ok", "flops": "ok"} | dict.fromkeys(SECTIONS[2:], "error")
