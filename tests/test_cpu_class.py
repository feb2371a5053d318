"""bench/cpu_class.sh: a process sees only its class's instruction sets, and the libraries the
service relies on dispatch accordingly; real crashes still crash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.cpu import cpu_info

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cpu_class.sh"
PROBE = (
    "import torch, openvino as ov; from model.cpu import cpu_info; "
    "print(cpu_info().isa_class, torch.backends.cpu.get_cpu_capability(), "
    "torch.ops.mkldnn._is_mkldnn_bf16_supported(), "
    "sorted(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')))"
)


def as_class(klass: str, *command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the CPUID mask")
    done = subprocess.run(
        ["bash", str(SCRIPT), klass, "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    return done


def test_avx2_class_hides_avx512_vnni_bf16_and_amx_from_every_library() -> None:
    host = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=3)
    if host[0] in ("avx2", "older"):
        pytest.skip("this CPU is AVX2 class already: nothing to hide")
    masked = as_class("avx2", sys.executable, "-c", PROBE)
    assert masked.returncode == 0, masked.stderr
    klass, capability, bf16, openvino = masked.stdout.split(maxsplit=3)
    assert (klass, capability, bf16) == ("avx2", "AVX2", "False")
    assert "BF16" not in openvino and "INT8" in openvino


def test_avx512_without_bf16_instructions_is_not_taken_for_a_bf16_cpu() -> None:
    """oneDNN says bf16 is supported on any AVX-512 CPU and emulates it there, several times
    slower than fp32: the service must not autocast to bf16 on such a CPU."""
    if "AVX512-BF16" not in cpu_info().features:
        pytest.skip("this CPU has no AVX512-BF16 to hide")
    probe = (
        "import torch; from model.cpu import cpu_has_bf16, cpu_info; "
        "print(cpu_info().isa_class, cpu_has_bf16(), torch.ops.mkldnn._is_mkldnn_bf16_supported())"
    )
    masked = as_class("avx512-vnni", sys.executable, "-c", probe)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.split()[:2] == ["avx512-vnni", "False"]  # oneDNN's own: likely True


def test_avx512_bf16_class_keeps_bf16_and_hides_amx() -> None:
    """AMD Zen 4 and Intel Cooper Lake: bf16 instructions, no AMX tiles, so bf16 autocast
    still pays off but rounds as AVX-512 dot products do."""
    if "AVX512-BF16" not in cpu_info().features:
        pytest.skip("this CPU has no AVX512-BF16: the class cannot be made here")
    probe = (
        "import torch; from model.cpu import cpu_has_bf16, cpu_info; i = cpu_info(); "
        "print(i.isa_class, cpu_has_bf16(), 'AMX' in i.features, "
        "'AVX-VNNI' in i.features, torch.backends.cpu.get_cpu_capability())"
    )
    masked = as_class("avx512-bf16", sys.executable, "-c", probe)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.split() == ["avx512-bf16", "True", "False", "False", "AVX512"]


def test_a_real_crash_under_the_mask_still_crashes() -> None:
    done = as_class("avx2", sys.executable, "-c", "import ctypes; ctypes.string_at(0)")
    assert done.returncode == -11  # SIGSEGV, handed on to the default action


def test_unknown_class_is_refused() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "avx9", "--", "true"], capture_output=True)
    assert done.returncode == 2 and b"usage" in done.stderr


@pytest.mark.slow
def test_embed_benchmark_finishes_on_an_avx2_class_cpu_with_its_own_data(tmp_path: Path) -> None:
    """No data folder given, no native bf16: it makes its crops, skips the bf16 peak, and
    reports the class beside every variant, ONNX Runtime and OpenVINO included."""
    bench = SCRIPT.parent / "embed.py"
    done = as_class(
        "avx2",
        sys.executable,
        str(bench),
        *("--quick", "--no-compile", "--sections", "speed", "--demo-dir", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "(avx2: AVX2, FMA)" in out and "kernels AVX2" in out
    assert "bf16 skipped" in out and "GOP/s" in out  # int8: ONNX Runtime's, fast on AVX2
    for variant in ("torch fp32 channels_last", "onnxruntime int8", "openvino int8"):
        assert f"| {variant} |" in out
    assert "## Sweep" in out
