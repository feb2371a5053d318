"""The CPU's class from its flags, and the start-up probe that picks an export's runtime.

The probe's logic is checked here with stand-in encoders whose speed is set by the test (real
runtimes' speeds cannot be ordered in advance); the real ONNX Runtime and OpenVINO go through
the same probe in tests/test_export.py, inside a real ``sona serve``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from model.choice import probe_fastest
from model.cpu import cpu_info, cpuid_features, parse_cpuinfo
from model.encoders import Encoder

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt"
CPUS = {
    # AMD EPYC 7763 (Zen 3): AVX2 and FMA, no AVX-512, no VNNI
    "avx2": f"{BASE} avx f16c fma bmi2 avx2 sha_ni vaes",
    # Intel Xeon Gold 6248 (Cascade Lake)
    "avx512-vnni": f"{BASE} avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni",
    # Intel Xeon Platinum 8380 (Ice Lake) without VNNI listed: plain AVX-512
    "avx512": f"{BASE} avx fma avx2 avx512f avx512dq avx512bw avx512vl",
    # AMD EPYC 9654 (Zen 4): AVX-512 with BF16, no AMX
    "avx512-bf16": f"{BASE} avx fma avx2 avx512f avx512_vnni avx512_bf16",
    # Intel Sapphire Rapids
    "amx": f"{BASE} avx fma avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile",
    "older": f"{BASE} avx",
}


@pytest.mark.parametrize("klass", sorted(CPUS))
def test_cpu_class_from_proc_cpuinfo(klass: str) -> None:
    text = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {CPUS[klass]}\n\nprocessor\t: 1\n"
    info = parse_cpuinfo(text)
    assert info.model == "Some CPU"
    assert info.isa_class == klass
    assert info.int8_fast == (klass in ("avx512-vnni", "avx512-bf16", "amx"))
    assert info.describe().startswith(f"Some CPU ({klass}: ")


def test_client_chip_with_avx_vnni_is_avx2_class_with_fast_int8() -> None:
    info = parse_cpuinfo(f"flags : {CPUS['avx2']} avx_vnni\n")
    assert info.isa_class == "avx2" and info.int8_fast
    assert "AVX-VNNI" in info.describe()


def test_this_cpu_is_described() -> None:
    info = cpu_info()
    assert info.isa_class in CPUS
    reported = cpuid_features()  # the CPUID instruction itself, as the runtimes read it
    if reported is not None and Path("/proc/cpuinfo").exists():
        # the kernel lists a flag only where CPUID has it (it may hide more, never add)
        assert parse_cpuinfo(Path("/proc/cpuinfo").read_text()).features <= reported
        assert info.features <= reported
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        assert "AVX-512" in info.features


class StandIn(Encoder):
    """An encoder that takes ``delay`` seconds a call: the probe must prefer the quicker."""

    input_size = (8, 4)
    dim = 3
    built: ClassVar[list[str]] = []

    def __init__(self, runtime: str, delay: float) -> None:
        self.runtime = self.name = runtime
        self.delay = delay
        StandIn.built.append(runtime)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        time.sleep(self.delay)
        return np.zeros((len(images), self.dim), np.float32)


def factories(slow: str) -> dict:
    return {
        name: (lambda n=name: StandIn(n, 0.03 if n == slow else 0.001))
        for name in ("onnxruntime", "openvino")
    }


def test_probe_picks_the_faster_then_reads_its_cache_with_stand_in_encoders(
    tmp_path: Path,
) -> None:
    export = tmp_path / "m.int8.onnx"
    export.write_bytes(b"the export's bytes")
    cache = tmp_path / "data" / "probe.json"  # its folder does not exist yet
    StandIn.built.clear()
    encoder, choice = probe_fastest(export, factories("onnxruntime"), cache=cache, seconds=0.1)
    assert encoder.runtime == choice.runtime == "openvino"
    assert choice.chosen_by == "probe" and "measured at start" in choice.reason
    assert choice.probe["openvino"] > 5 * choice.probe["onnxruntime"]
    assert sorted(StandIn.built) == ["onnxruntime", "openvino"]
    assert list(json.loads(cache.read_text()).values()) == [choice.probe]

    StandIn.built.clear()  # the next start measures nothing and builds only the chosen one
    encoder, again = probe_fastest(export, factories("openvino"), cache=cache, seconds=0.1)
    assert again.chosen_by == "cache" and again.runtime == "openvino"
    assert StandIn.built == ["openvino"]

    export.write_bytes(b"another export")  # re-exported: measured again
    encoder, fresh = probe_fastest(export, factories("openvino"), cache=cache, seconds=0.1)
    assert fresh.chosen_by == "probe" and fresh.runtime == "onnxruntime"
    assert len(json.loads(cache.read_text())) == 2


def test_probe_without_a_writable_cache_still_chooses_with_stand_in_encoders(
    tmp_path: Path,
) -> None:
    export = tmp_path / "m.onnx"
    export.write_bytes(b"x")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    _, choice = probe_fastest(
        export, factories("openvino"), cache=blocked / "probe.json", seconds=0.05
    )
    assert choice.runtime == "onnxruntime" and choice.chosen_by == "probe"
    (tmp_path / "junk.json").write_text("[not json")
    _, choice = probe_fastest(
        export, factories("openvino"), cache=tmp_path / "junk.json", seconds=0.05
    )
    assert choice.chosen_by == "probe"
    assert json.loads((tmp_path / "junk.json").read_text())  # replaced by a good cache
