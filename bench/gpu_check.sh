#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py), run from anywhere on a machine with an NVIDIA GPU
# and the machine's own python3 with torch and torchvision; it installs nothing and needs no
# network, and nothing beyond the repository has to be brought along.
#
#   bash bench/gpu_check.sh                          # aims at 5 minutes (--budget 300)
#   bash bench/gpu_check.sh --budget 150 --no-compile  # a second, shorter try
#
# Give the command an outer time limit of at least the budget plus 120 s (420 s by default,
# 270 s for the second try above): the script stops itself by the budget plus its grace (60 s,
# --grace) at most, and its own backstop (`timeout`, below) ends python 30 s later. Even killed,
# ${OUT:-.}/gpu_check.json holds every figure measured until then (it is rewritten after each
# row) and ${OUT:-.}/gpu_check.log the whole output.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
budget=300 grace=60
previous=""
for arg in "$@"; do
    [[ $previous == --budget ]] && budget="$arg"
    [[ $arg == --budget=* ]] && budget="${arg#--budget=}"
    [[ $previous == --grace ]] && grace="$arg"
    [[ $arg == --grace=* ]] && grace="${arg#--grace=}"
    previous="$arg"
done
limit=$(( ${budget%.*} + ${grace%.*} + 30 ))
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        || echo "nvidia-smi: not available here"
    timeout --kill-after=15 "$limit" "${PYTHON:-python3}" bench/gpu_check.py \
        --out "$out/gpu_check.json" "$@"
} 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
