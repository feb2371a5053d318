#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): run from the repository root on a machine with
# an NVIDIA GPU; about 5 minutes on one H100/H200. Figures go to stdout and, as JSON, to
# ${OUT:-.}/gpu_check.json. Needs torch and torchvision; faiss rows appear where faiss imports.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout 540 python3 bench/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
