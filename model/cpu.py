"""What this CPU can do: its instruction sets, and the class they put it in.

Which encoder is fastest depends on them: int8 convolutions run on VNNI or AMX several times
faster than on AVX2's 16-bit multiply-adds, and bf16 pays off only with AVX512-BF16 or AMX.
Benchmarks print the class beside their figures, and the service names it when it explains
its choice of encoder.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CpuInfo", "cpu_has_bf16", "cpu_info", "cpuid_features", "parse_cpuinfo"]

#: Instruction sets that change which path is fastest, with the /proc/cpuinfo flag of each.
FEATURES = {
    "AVX2": "avx2",
    "FMA": "fma",
    "AVX-512": "avx512f",
    "AVX-VNNI": "avx_vnni",
    "AVX512-VNNI": "avx512_vnni",
    "AVX512-BF16": "avx512_bf16",
    "AMX": "amx_tile",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and the instruction sets of ``FEATURES`` it has."""

    model: str
    features: frozenset[str]

    @property
    def isa_class(self) -> str:
        """``amx``, ``avx512-bf16``, ``avx512-vnni``, ``avx512``, ``avx2`` or ``older``.

        The classes that the benchmarks report separately: each differs in what int8 and
        bf16 cost. An AVX2 CPU with AVX-VNNI (some client chips) counts as ``avx2``; its
        VNNI is listed in ``features``.
        """
        has = self.features.__contains__
        if has("AMX"):
            return "amx"
        if has("AVX512-BF16"):
            return "avx512-bf16"
        if has("AVX512-VNNI"):
            return "avx512-vnni"
        if has("AVX-512"):
            return "avx512"
        if has("AVX2") and has("FMA"):
            return "avx2"
        return "older"

    @property
    def int8_fast(self) -> bool:
        """Whether int8 dot products have their own instruction (VNNI or AMX)."""
        return bool(self.features & {"AVX-VNNI", "AVX512-VNNI", "AMX"})

    def describe(self) -> str:
        """``Intel Xeon ... (amx: AVX2, FMA, AVX-512, ...)``, for reports and logs."""
        names = ", ".join(name for name in FEATURES if name in self.features) or "no AVX2"
        return f"{self.model} ({self.isa_class}: {names})"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags in the text of /proc/cpuinfo."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuInfo(model, frozenset(name for name, flag in FEATURES.items() if flag in flags))


#: x86-64 machine code of ``cpuid(leaf, subleaf, uint32 out[4])`` (System V calling
#: convention): push rbx; mov r8, rdx; mov eax, edi; mov ecx, esi; cpuid;
#: mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("534989d089f889f10fa241890041895804418948084189500c5bc3")


def cpuid_features() -> frozenset[str] | None:
    """The ``FEATURES`` that the CPUID instruction reports, as the runtimes' dispatchers read
    them; None where it cannot run (another architecture, no executable memory)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        code = mmap.mmap(
            -1, len(_CPUID_CODE), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        )
    except (OSError, ValueError):
        return None
    code.write(_CPUID_CODE)
    anchor = ctypes.c_char.from_buffer(code)  # pins the page while the function runs
    registers = ctypes.c_uint32 * 4
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(registers))
    call = prototype(ctypes.addressof(anchor))

    def cpuid(leaf: int, sub: int = 0) -> tuple[int, ...]:
        out = registers()
        call(leaf, sub, out)
        return tuple(out)

    try:
        found = set()
        top = cpuid(0)[0]
        if cpuid(1)[2] >> 12 & 1:
            found.add("FMA")
        if top >= 7:
            subleaves, ebx, ecx, edx = cpuid(7)
            bits = {"AVX2": ebx >> 5, "AVX-512": ebx >> 16, "AVX512-VNNI": ecx >> 11}
            bits["AMX"] = edx >> 24
            found |= {name for name, bit in bits.items() if bit & 1}
            if subleaves >= 1:
                eax = cpuid(7, 1)[0]
                found |= {n for n, bit in (("AVX-VNNI", 4), ("AVX512-BF16", 5)) if eax >> bit & 1}
        return frozenset(found)
    finally:
        del anchor
        code.close()


@functools.cache
def cpu_info() -> CpuInfo:
    """This CPU: /proc/cpuinfo's model and flags (what the kernel enabled), less what CPUID
    does not report to this process (a masked CPU, as ``bench/cpu_class.sh`` makes);
    elsewhere, what PyTorch's dispatcher chose."""
    reported = cpuid_features()
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
        if info.features or info.model:
            if reported is None:
                return info
            return CpuInfo(info.model, info.features & reported)
    except OSError:
        pass
    if reported is not None:
        return CpuInfo(platform.processor() or platform.machine(), reported)
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ...
    features = {"AVX2", "FMA"} if capability in ("AVX2", "AVX512") else set()
    if capability == "AVX512":
        features.add("AVX-512")
    if _onednn_bf16() and capability == "AVX512":
        features.add("AVX512-BF16")
    return CpuInfo(platform.processor() or platform.machine(), frozenset(features))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively, so autocast pays off.

    On x86 that means AVX512-BF16 or AMX. oneDNN also reports bf16 support on AVX-512 CPUs
    without them (Skylake, Cascade Lake, Ice Lake), where it emulates bf16 several times
    slower than fp32 (bench/RESULTS.md), so its answer counts only on other architectures.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        return bool(cpu_info().features & {"AVX512-BF16", "AMX"})
    return _onednn_bf16()


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
