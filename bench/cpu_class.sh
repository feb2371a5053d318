#!/usr/bin/env bash
# Run a command as it runs on an older class of x86 CPU: its libraries see only the
# instruction sets of that class and dispatch the kernels they would pick there.
#
#   bash bench/cpu_class.sh avx2 -- python bench/embed.py --no-compile
#   bash bench/cpu_class.sh avx512-vnni -- python bench/embed.py --no-compile
#   bash bench/cpu_class.sh avx512-bf16 -- python bench/embed.py --no-compile
#
# Classes: avx2 (AVX2 and FMA: no AVX-512, VNNI, BF16 or AMX, like an AMD EPYC Zen 2/3 or an
# Intel Xeon up to Broadwell), avx512-vnni (Cascade Lake, Ice Lake: no BF16, no AMX),
# avx512-bf16 (AMD Zen 4, Intel Cooper Lake: AVX512-BF16 but no AMX), host. A class can only
# hide what the host has: on a CPU without AMX, avx512-bf16 runs as host does.
# How: bench/cpu_class/mask_cpuid.c, preloaded, turns on Linux's CPUID faulting and answers
# every CPUID with the class's bits cleared (see its header). The code runs natively, at full
# speed, on this machine's cores: what it measures is the class's code paths, not another
# chip's caches, clocks or memory. Needs gcc and a CPU and kernel with CPUID faulting
# (/proc/cpuinfo flag cpuid_fault); exits 77 where there is none.
set -euo pipefail

usage() { echo "usage: bash bench/cpu_class.sh avx2|avx512-vnni|avx512-bf16|host -- COMMAND [ARGS...]" >&2; exit 2; }
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
class=$1
shift 2
case $class in avx2 | avx512-vnni | avx512-bf16 | host) ;; *) usage ;; esac

if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "cpu_class: SKIP: this CPU or kernel has no CPUID faulting (flag cpuid_fault)" >&2
    exit 77
fi
source_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cpu_class/mask_cpuid.c"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sona-bench"
library="$cache/mask_cpuid-$(sha256sum "$source_file" | cut -c1-12).so"
if [ ! -f "$library" ]; then
    mkdir -p "$cache"
    cc -O2 -Wall -shared -fPIC -o "$library.tmp" "$source_file"
    mv "$library.tmp" "$library"
fi
# Python's faulthandler would take SIGSEGV, and with it every CPUID, from the mask
unset PYTHONFAULTHANDLER
export SONA_CPU_CLASS=$class
export LD_PRELOAD="$library${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
