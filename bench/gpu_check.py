"""The prepared GPU check: what the paper configuration does on one NVIDIA GPU, in minutes.

    bash bench/gpu_check.sh                 # on a machine with a GPU (about 5 minutes)
    python bench/gpu_check.py --smoke       # the same code on a CPU at a tiny size (the suite)

Prints, for the paper configuration (depth 50, 384 x 128, SONA2+3, P x K = 32 x 4, 751
identities, random weights):

1. training steps in fp32 (TF32 off) and bf16 autocast, channels_last: images/s, peak memory;
2. CUDA against CPU embeddings of the same crops: fp32 vector agreement, bf16 rankings;
3. the service's encoder (TorchEncoder) at batch 1, 8, 32, 64, 128: embeddings/s in bf16
   channels_last, eager and torch.compile (where it helps);
4. exact search of 1M 1536-d vectors: faiss-gpu where installed, else a torch matrix product
   on the GPU, against faiss-cpu (each where it can be imported), queries/s and recall.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model import PRESETS, SONANet, SONANetConfig
from model.encoders import TorchEncoder, agreement
from training.losses import ReIDLoss


def timed(step: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds per call, after two warm-up calls, synchronising the GPU around the timing."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def training_step(
    config: SONANetConfig, device: torch.device, p: int, k: int, repeats: int, bf16: bool
) -> dict:
    """One precision's training steps on a fixed P x K batch of random images."""
    torch.manual_seed(0)
    net = SONANet(config).to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-4)
    criterion = ReIDLoss()
    images = torch.randn(p * k, 3, *config.input_size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    pids = torch.arange(p, device=device).repeat_interleave(k)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(net(images), pids).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, device, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    row = {
        "precision": "bf16" if bf16 else "fp32",
        "batch": p * k,
        "step_ms": round(1000 * seconds, 1),
        "images_per_s": round(p * k / seconds, 1),
        "peak_GiB": round(peak, 2),
    }
    print("train", json.dumps(row), flush=True)
    return row


def crops(count: int, size: tuple[int, int]) -> torch.Tensor:
    """Smooth random uint8 crops (noise upsampled), less degenerate than white noise."""
    generator = torch.Generator().manual_seed(1)
    small = torch.rand(count, 3, size[0] // 8, size[1] // 8, generator=generator)
    big = torch.nn.functional.interpolate(small, size=size, mode="bilinear")
    return (big * 255).to(torch.uint8)


def cpu_agreement(net: SONANet, device: torch.device, count: int) -> dict:
    """The same crops through the same weights on the CPU (fp32, the reference) and here."""
    images = crops(count, net.config.input_size)
    cpu = TorchEncoder(_copy(net), "cpu", channels_last=False)(images)
    result = {
        "fp32": agreement(cpu, TorchEncoder(_copy(net), device)(images)),
        "bf16": agreement(cpu, TorchEncoder(_copy(net), device, bf16=True)(images)),
    }
    print("agreement", json.dumps(result), flush=True)
    return result


def _copy(net: SONANet) -> SONANet:
    other = SONANet(net.config).eval()
    other.load_state_dict(net.state_dict())
    return other


def encoder_throughput(
    net: SONANet, device: torch.device, batches: list[int], repeats: int, compile: bool
) -> list[dict]:
    rows = []
    variants = [("bf16 eager", False)] + ([("bf16 compiled", True)] if compile else [])
    bf16 = device.type == "cuda"
    for name, compiled in variants:
        encoder = TorchEncoder(_copy(net), device, bf16=bf16, compile=compiled)
        for batch in batches:
            images = crops(batch, net.config.input_size)
            start = time.perf_counter()
            seconds = timed(lambda e=encoder, x=images: e(x), device, repeats)
            rows.append(
                {
                    "encoder": name if bf16 else name.replace("bf16", "fp32"),
                    "batch": batch,
                    "ms_per_batch": round(1000 * seconds, 2),
                    "embeddings_per_s": round(batch / seconds, 1),
                    "first_calls_s": round(time.perf_counter() - start - repeats * seconds, 1),
                }
            )
            print("embed", json.dumps(rows[-1]), flush=True)
    return rows


def search(count: int, dim: int, queries: int, device: torch.device) -> list[dict]:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((count, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    query = base[rng.choice(count, queries, replace=False)] + 0.05 * rng.standard_normal(
        (queries, dim), dtype=np.float32
    )
    rows: list[dict] = []
    truth = None
    try:
        import faiss
    except ImportError:
        faiss = None
        print("search: faiss is not installed here; faiss rows skipped", flush=True)
    if faiss is not None:
        index = faiss.IndexFlatIP(dim)
        index.add(base)
        start = time.perf_counter()
        _, truth = index.search(query, 10)
        seconds = time.perf_counter() - start
        rows.append({"engine": "faiss-cpu IndexFlatIP", "queries_per_s": queries / seconds})
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpus:
            gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            gpu_index.search(query[:8], 10)
            start = time.perf_counter()
            _, found = gpu_index.search(query, 10)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "engine": "faiss-gpu IndexFlatIP",
                    "queries_per_s": queries / seconds,
                    "recall@10": _recall(truth, found),
                }
            )
        else:
            print("search: faiss has no GPU here (faiss-cpu); faiss-gpu row skipped", flush=True)
    if device.type == "cuda" or truth is None:
        on = torch.from_numpy(base).to(device)
        q = torch.from_numpy(query).to(device)
        seconds = timed(lambda: (q @ on.T).topk(10, dim=1), device, 3)
        found = (q @ on.T).topk(10, dim=1).indices.cpu().numpy()
        row = {"engine": f"torch matmul + topk ({device.type}, fp32)"}
        row["queries_per_s"] = queries / seconds
        if truth is not None:
            row["recall@10"] = _recall(truth, found)
        rows.append(row)
    for row in rows:
        row["queries_per_s"] = round(row["queries_per_s"], 1)
        print("search", json.dumps(row | {"vectors": count, "dim": dim}), flush=True)
    return rows


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(
        np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args()

    if args.smoke:
        device = torch.device("cpu")
        config = dataclasses.replace(PRESETS["tiny"], num_classes=8)
        p, k, repeats, batches, vectors, compile = 4, 2, 1, [1, 4], 2000, False
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device; use --smoke for the CPU dry run")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        config = SONANetConfig()  # the paper's: depth 50, 384 x 128, SONA2+3, 751 classes
        p, k, repeats, batches, vectors = 32, 4, 10, [1, 8, 32, 64, 128], 1_000_000
        compile = not args.no_compile
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(f"gpu_check on {name}, torch {torch.__version__}", flush=True)
    figures: dict = {"device": name, "torch": torch.__version__}
    figures["train"] = [
        training_step(config, device, p, k, repeats, bf16) for bf16 in (False, True)
    ]
    torch.manual_seed(0)
    net = SONANet(dataclasses.replace(config, num_classes=0)).eval()
    figures["agreement"] = cpu_agreement(net, device, 64 if not args.smoke else 16)
    figures["embed"] = encoder_throughput(net, device, batches, repeats, compile)
    figures["search"] = search(vectors, 1536, 1000 if not args.smoke else 20, device)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
