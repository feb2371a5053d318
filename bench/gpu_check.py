"""The prepared GPU check: what the paper configuration does on one NVIDIA GPU, in minutes.

    bash bench/gpu_check.sh                 # on a machine with a GPU (about 5 minutes)
    python bench/gpu_check.py --smoke       # the same code on a CPU at a tiny size (the suite)

Sections, cheap and certain ones first; the figures (JSON) are rewritten after every row, so
whatever stops the run leaves what it measured (bench/guarded_run.py):

1. env: torch, CUDA, cuDNN, driver, compilers and the GPU, beside the figures;
2. flops: the network's FLOPs per flip-averaged embedding and per training image, counted
   from the model (torch.utils.flop_counter), for TFLOP/s beside every images/s;
3. agreement: CUDA against CPU embeddings of the same crops, through a network whose SONA
   blocks add to their input (non-zero output layer) and whose batch norms are calibrated
   (train-mode passes): fp32, TF32, bf16, fp16, and with SONA switched off for scale;
4. train: steps at P x K = 32 x 4 in fp32, TF32 and bf16, images/s, TFLOP/s, each its own peak;
5. encoder: the service's encoder (TorchEncoder) eager, bf16 and fp32, at batch 1 to 128;
6. search: exact search of 1M 1536-d vectors on the GPU: queries/s, 1- and 32-query latency,
   recall against an exact CPU reference on 100 queries (and faiss, where it imports);
7. encoder_more (optional): TF32 and fp16 encoder rows;
8. compile (optional, last): torch.compile of the bf16 encoder at batch 8 and 128, each a
   row (an error row if it fails), with its agreement against the CPU.

Optional sections start only while ``--budget`` has time for them; every section stops at
its own guard. Random weights throughout: speed and agreement, not accuracy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from guarded_run import GRACE_S, Run, Section, say, sig
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

try:  # the project's code: where it fails to import, the machine is still recorded
    from model import PRESETS, SONANet, SONANetConfig
    from model.encoders import TorchEncoder, agreement
    from model.preprocess import normalize
    from model.sona import SONA
    from model.sona_net import embed
    from training.losses import ReIDLoss
except ImportError as error:
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None

#: autocast dtype and TF32 switch of each precision the rows name.
PRECISIONS: dict[str, tuple[torch.dtype | None, bool]] = {
    "fp32": (None, False),
    "tf32": (None, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


#: PyTorch's own TF32 settings, read before the full run turns TF32 off for its fp32 rows.
TF32_DEFAULTS = {
    "cudnn_conv": torch.backends.cudnn.allow_tf32,
    "matmul": torch.backends.cuda.matmul.allow_tf32,
}


@dataclasses.dataclass
class Setup:
    """Sizes for this run, and what earlier sections leave for later ones."""

    smoke: bool
    device: torch.device
    config: SONANetConfig
    p: int = 32
    k: int = 4
    repeats: int = 10
    batches: tuple[int, ...] = (1, 8, 32, 64, 128)
    agreement_crops: int = 64
    vectors: int = 1_000_000
    dim: int = 1536
    queries: int = 1000
    reference_queries: int = 100
    compile_batches: tuple[int, ...] = (8, 128)
    compile_backend: str = "inductor"
    compile_precision: str = "bf16"
    compile_estimate_s: float = 60.0
    gflop_embedding: float | None = None
    gflop_training_image: float | None = None
    net: SONANet | None = None
    crops: torch.Tensor | None = None
    reference: np.ndarray | None = None


# -- helpers -------------------------------------------------------------------------------
@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for matrix products and convolutions, restored after."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device, repeats: int) -> dict[str, float]:
    """The first call's seconds (start-up: kernels picked, graphs compiled), then the median
    of ``repeats`` timed calls after one more warm-up, the GPU synchronised around each."""
    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(times)}


def free_memory(device: torch.device) -> None:
    """Drop what earlier rows left, so the next row's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def crops(count: int, size: tuple[int, int], seed: int = 1) -> torch.Tensor:
    """Smooth random uint8 crops (noise upsampled), less degenerate than white noise."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(count, 3, size[0] // 8, size[1] // 8, generator=generator)
    big = F.interpolate(small, size=size, mode="bilinear")
    return (big * 255).to(torch.uint8)


def copy_net(net: SONANet) -> SONANet:
    other = SONANet(net.config, load_backbone_weights=False).eval()
    other.load_state_dict(net.state_dict())
    return other


def tflops(per_second: float, gflop: float | None) -> float | None:
    return sig(per_second * gflop / 1000) if gflop else None


def encoder(
    net: SONANet, device: torch.device, precision: str, compile_backend: str | None = None
) -> Callable[[torch.Tensor], np.ndarray]:
    """uint8 crops in, embeddings out, as the service computes them. fp32, TF32 and bf16 are
    the service's own TorchEncoder; fp16 (which the service does not offer) is the same call
    under float16 autocast. ``compile_backend``: torch.compile with that backend first, as
    TorchEncoder(compile=True) does with the default one."""
    dtype, allow_tf32 = PRECISIONS[precision]
    if compile_backend is not None:
        net = torch.compile(net, dynamic=False, backend=compile_backend)
    if dtype is torch.float16:
        net = net.to(device).eval().to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def encode(images: torch.Tensor) -> np.ndarray:
            batch = normalize(images.to(device, non_blocking=True))
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16):
                return embed(net, batch).cpu().numpy()

        return encode
    service = TorchEncoder(net, device, bf16=dtype is torch.bfloat16)

    def call(images: torch.Tensor) -> np.ndarray:
        with tf32(allow_tf32):
            return service(images)

    return call


def embed_in_batches(
    encode: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, batch: int
) -> np.ndarray:
    """Embed ``images`` at exactly ``batch`` per call (a static compiled shape): the last
    call is padded with repeats of its first crop and the padding dropped."""
    parts = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = torch.cat([chunk, chunk[:1].expand(pad, *chunk.shape[1:])])
        parts.append(encode(chunk)[: batch - pad])
    return np.concatenate(parts)


def command_line(*command: str) -> str | None:
    """A tool's answer, or why there is none (the machine may lack it)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable: {type(error).__name__}"
    text = (done.stdout or done.stderr).strip()
    return text if done.returncode == 0 else f"exit {done.returncode}: {text[:200]}"


def package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- sections ------------------------------------------------------------------------------
def env(run: Run) -> None:
    """Versions and hardware, so every figure says what produced it."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": package("torchvision"),
        "triton": package("triton"),
        "numpy": np.__version__,
        "faiss": package("faiss-gpu") or package("faiss-cpu") or package("faiss"),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "cuda_available": torch.cuda.is_available(),
        "tf32_defaults": TF32_DEFAULTS,
        "nvidia_smi": command_line(
            "nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"
        ),
        "nvcc": nvcc_version(),
        "cc": (command_line("cc", "--version") or "").splitlines()[:1],
        "commit": command_line("git", "rev-parse", "--short", "HEAD"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_GiB": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
        }
    run.set("env", info)


def nvcc_version() -> str:
    """CUDA's compiler, on the PATH or where CUDA installs it by default."""
    for nvcc in ("nvcc", "/usr/local/cuda/bin/nvcc"):
        answer = command_line(nvcc, "--version") or ""
        if not answer.startswith(("unavailable", "exit")):
            return answer.splitlines()[-1]
    return "unavailable"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def flops(run: Run, setup: Setup) -> None:
    """FLOPs counted from the model on the meta device (shapes only: no memory, no GPU, the
    same count as any device), attention through the math kernel whose matrix products the
    counter sees, a multiply-add counting two."""
    batch, p, k = 2, 2, 2
    size = setup.config.input_size
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH):
        net = SONANet(dataclasses.replace(setup.config, num_classes=0), load_backbone_weights=False)
        with FlopCounterMode(display=False) as counter:
            embed(net.eval(), torch.randn(batch, 3, *size))
        per_embedding = counter.get_total_flops() / batch / 1e9
        net = SONANet(setup.config, load_backbone_weights=False).train()
        pids = torch.arange(p).repeat_interleave(k)
        with FlopCounterMode(display=False) as counter:
            ReIDLoss()(net(torch.randn(p * k, 3, *size)), pids).total.backward()
        per_image = counter.get_total_flops() / (p * k) / 1e9
    setup.gflop_embedding, setup.gflop_training_image = per_embedding, per_image
    run.set(
        "flops",
        {
            "gflop_per_embedding": sig(per_embedding, 4),
            "gflop_per_training_image": sig(per_image, 4),
            "note": "embedding: image and mirror, forward only; training: forward and backward",
        },
    )


def checked_net(setup: Setup) -> SONANet:
    """The network the agreement and compile rows check: SONA output layers set to one (the
    block adds its attention to its input; at zero a wrong attention kernel would pass) and
    batch norms calibrated by train-mode passes over crops (random statistics hide errors)."""
    if setup.net is None:
        torch.manual_seed(0)
        net = SONANet(dataclasses.replace(setup.config, num_classes=0))
        for module in net.modules():
            if isinstance(module, SONA):
                torch.nn.init.ones_(module.p[1].weight)
        kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
        norms = [m for m in net.modules() if isinstance(m, kinds)]
        for norm in norms:
            norm.momentum = None  # a plain average over the calibration passes
        net = net.to(setup.device).train()
        passes, batch = (1, 8) if setup.smoke else (4, 32)
        with torch.no_grad(), tf32(False):
            for seed in range(passes):
                images = crops(batch, setup.config.input_size, seed=100 + seed)
                net(normalize(images.to(setup.device)))
        for norm in norms:
            norm.momentum = 0.1
        setup.net = net.cpu().eval()
    return setup.net


def agreements(run: Run, setup: Setup) -> None:
    net = checked_net(setup)
    images = crops(setup.agreement_crops, setup.config.input_size)
    reference_net = copy_net(net)
    ratios: dict[str, list[float]] = {}
    for name, module in reference_net.named_modules():
        if isinstance(module, SONA):
            module.register_forward_hook(
                lambda m, inputs, out, name=name: ratios.setdefault(name, []).append(
                    float((out - inputs[0]).norm() / inputs[0].norm())
                )
            )
    start = time.perf_counter()
    reference = TorchEncoder(reference_net, "cpu", channels_last=False)(images)
    setup.crops, setup.reference = images, reference
    run.set(
        "agreement_reference",
        {
            "crops": len(images),
            "cpu_seconds": sig(time.perf_counter() - start),
            # what SONA adds to its input, relative to it: the attention the check can see
            "sona_added_norm_ratio": {name: sig(statistics.mean(r)) for name, r in ratios.items()},
        },
    )
    for precision in PRECISIONS:
        run.row(
            "agreement",
            {"encoder": f"{precision} eager ({setup.device.type})"},
            lambda p=precision: agreement(
                reference, encoder(copy_net(net), setup.device, p)(images)
            ),
        )
    off = copy_net(net)
    for module in off.modules():
        if isinstance(module, SONA):
            torch.nn.init.zeros_(module.p[1].weight)
    run.row(
        "agreement",
        {"encoder": f"fp32, SONA switched off ({setup.device.type}): the scale of a SONA error"},
        lambda: agreement(reference, encoder(off, setup.device, "fp32")(images)),
    )


def train(run: Run, setup: Setup) -> None:
    for precision in ("fp32", "tf32", "bf16"):
        free_memory(setup.device)
        run.row("train", {"precision": precision}, lambda p=precision: training_step(setup, p))
        free_memory(setup.device)


def training_step(setup: Setup, precision: str) -> dict[str, Any]:
    """One precision's training steps on a fixed P x K batch of random images."""
    device, config = setup.device, setup.config
    dtype, allow_tf32 = PRECISIONS[precision]
    torch.manual_seed(0)
    net = SONANet(config).to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-4)
    criterion = ReIDLoss()
    batch = setup.p * setup.k
    images = torch.randn(batch, 3, *config.input_size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    pids = torch.arange(setup.p, device=device).repeat_interleave(setup.k)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(net(images), pids).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with tf32(allow_tf32):
        times = timed(step, device, setup.repeats)
    per_second = batch / times["median_s"]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "batch": batch,
        "step_ms": sig(1000 * times["median_s"]),
        "images_per_s": sig(per_second),
        "tflops": tflops(per_second, setup.gflop_training_image),
        "peak_GiB": sig(peak),
        "first_step_s": sig(times["first_s"]),
    }


def encoders(run: Run, setup: Setup, section: str, precisions: tuple[str, ...]) -> None:
    net = checked_net(setup)
    for precision in precisions:
        encode = encoder(copy_net(net), setup.device, precision)
        for batch in setup.batches:
            images = crops(batch, setup.config.input_size)
            run.row(
                section,
                {"precision": precision, "batch": batch},
                lambda e=encode, x=images, b=batch: throughput(setup, e, x, b),
            )
        del encode
        free_memory(setup.device)


def throughput(
    setup: Setup, encode: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, batch: int
) -> dict[str, Any]:
    times = timed(lambda: encode(images), setup.device, setup.repeats)
    per_second = batch / times["median_s"]
    return {
        "ms_per_batch": sig(1000 * times["median_s"]),
        "embeddings_per_s": sig(per_second),
        "tflops": tflops(per_second, setup.gflop_embedding),
        "first_call_s": sig(times["first_s"]),
    }


def search(run: Run, setup: Setup) -> None:
    """Exact inner-product search of unit vectors; queries are noisy copies of stored ones."""
    device, count, dim = setup.device, setup.vectors, setup.dim
    generator = torch.Generator(device=device).manual_seed(0)
    base = F.normalize(torch.randn(count, dim, device=device, generator=generator), dim=1)
    picks = torch.randint(count, (setup.queries,), device=device, generator=generator)
    noise = torch.randn(setup.queries, dim, device=device, generator=generator)
    queries = F.normalize(base[picks] + 0.05 * noise, dim=1).cpu().numpy()
    del noise, picks
    host = base.cpu()
    checked = queries[: setup.reference_queries]
    start = time.perf_counter()
    truth = (torch.from_numpy(checked) @ host.T).topk(10, dim=1).indices.numpy()
    cpu_seconds = time.perf_counter() - start
    shape = {"vectors": count, "dim": dim}
    run.row(
        "search",
        {"engine": "torch fp32 matmul + topk (cpu): the exact reference"} | shape,
        lambda: {"queries": len(checked), "queries_per_s": sig(len(checked) / cpu_seconds)},
    )
    matmul_rows(run, setup, base, queries, truth, shape)
    del base
    free_memory(device)
    faiss_rows(run, setup, host.numpy(), queries, truth, shape)


def matmul_rows(
    run: Run,
    setup: Setup,
    base: torch.Tensor,
    queries: np.ndarray,
    truth: np.ndarray,
    shape: dict[str, int],
) -> None:
    """The GPU as a flat index: one matrix product and a top-k, fp32 with TF32 off."""

    def find(q: np.ndarray) -> np.ndarray:
        with tf32(False):
            scores = torch.from_numpy(q).to(base.device) @ base.T
        return scores.topk(10, dim=1).indices.cpu().numpy()

    run.row(
        "search",
        {"engine": f"torch fp32 matmul + topk ({base.device.type})"} | shape,
        lambda: search_figures(setup, find, queries, truth),
    )


def search_figures(
    setup: Setup,
    find: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    truth: np.ndarray,
    latency: bool = True,
) -> dict[str, Any]:
    """Queries/s at the full query batch, median latency of 1 and of 32 queries (the host's
    copy in and out included, as a service pays it), recall@10 against the CPU reference."""
    whole = timed(lambda: find(queries), setup.device, 3)
    latencies = {}
    for size in (1, 32) if latency else ():
        find(queries[:size])
        times = []
        for start in range(0, min(20 * size, len(queries) - size + 1), size):
            began = time.perf_counter()
            find(queries[start : start + size])  # ends with a copy to the host: synchronised
            times.append(time.perf_counter() - began)
        latencies[f"latency_{size}_ms"] = sig(1000 * statistics.median(times))
    return {
        "queries": len(queries),
        "queries_per_s": sig(len(queries) / whole["median_s"]),
        **latencies,
        "recall@10": recall(truth, find(queries[: len(truth)])),
    }


def faiss_rows(
    run: Run,
    setup: Setup,
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    shape: dict[str, int],
) -> None:
    try:
        import faiss
    except ImportError:
        run.skip_row("search", {"engine": "faiss"}, "faiss is not installed here")
        return
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)

    def cpu_find(q: np.ndarray) -> np.ndarray:
        return index.search(q, 10)[1]

    run.row(
        "search",
        {"engine": "faiss-cpu IndexFlatIP"} | shape,
        lambda: search_figures(setup, cpu_find, queries[: len(truth)], truth, latency=False),
    )
    if not getattr(faiss, "get_num_gpus", lambda: 0)():
        run.skip_row("search", {"engine": "faiss-gpu"}, "this faiss has no GPU support")
        return
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)

    def gpu_find(q: np.ndarray) -> np.ndarray:
        return gpu_index.search(q, 10)[1]

    run.row(
        "search",
        {"engine": "faiss-gpu IndexFlatIP"} | shape,
        lambda: search_figures(setup, gpu_find, queries, truth),
    )


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    shares = [len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)]
    return float(np.mean(shares))


def compiled(run: Run, setup: Setup) -> None:
    """torch.compile per static batch size: a failed or too slow compile is a row, not the end."""
    net = checked_net(setup)
    for batch in setup.compile_batches:
        keys = {"precision": setup.compile_precision, "batch": batch}
        if run.remaining() < setup.compile_estimate_s:
            run.skip_row("compile", keys, f"budget: {max(run.remaining(), 0):.0f} s left")
            continue
        run.row("compile", keys, lambda b=batch: compiled_row(setup, net, b))
        free_memory(setup.device)


def compiled_row(setup: Setup, net: SONANet, batch: int) -> dict[str, Any]:
    encode = encoder(copy_net(net), setup.device, setup.compile_precision, setup.compile_backend)
    row = throughput(setup, encode, crops(batch, setup.config.input_size), batch)
    row["compile_s"] = row.pop("first_call_s")
    row["backend"] = setup.compile_backend
    if setup.reference is not None and setup.crops is not None:
        found = embed_in_batches(encode, setup.crops, batch)
        row["agreement"] = agreement(setup.reference, found)
    return row


# -- main ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, help="keep the figures as JSON here (rewritten often)")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds the run aims at (default 300): optional sections start only while "
        "there is time for them",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=GRACE_S,
        help=f"seconds past the budget the other sections may take (default {GRACE_S:.0f}): "
        "nothing runs past budget + grace",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the compile section")
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="only the versions and the paper configuration's FLOPs (counted on any CPU)",
    )
    parser.add_argument(
        "--compile-batches",
        type=lambda text: tuple(int(b) for b in text.split(",")),
        help="batch sizes to compile, comma-separated (default 8,128; smoke 2,4)",
    )
    parser.add_argument(
        "--section-cap",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="the most seconds section NAME may take (default: its own)",
    )
    parser.add_argument(
        "--fail-section",
        action="append",
        default=[],
        metavar="NAME[:ROW]",
        help="inject a failure into a section, or into one row of it (tests the error rows)",
    )
    parser.add_argument(
        "--hang-section",
        action="append",
        default=[],
        metavar="NAME",
        help="make a section hang until its guard stops it (tests the guard)",
    )
    return parser.parse_args(argv)


def make_setup(args: argparse.Namespace) -> Setup:
    if args.smoke:
        setup = Setup(
            smoke=True,
            device=torch.device("cpu"),
            config=dataclasses.replace(PRESETS["tiny"], num_classes=8),
            p=2,
            k=2,
            repeats=1,
            batches=(1, 3),
            agreement_crops=12,
            vectors=2000,
            queries=40,
            reference_queries=10,
            compile_batches=(2, 3),
            # Inductor takes minutes on a small CPU: the smoke run checks the tracing
            compile_backend="eager",
            compile_precision="fp32",
            compile_estimate_s=0.0,
        )
    else:
        setup = Setup(smoke=False, device=torch.device("cuda"), config=SONANetConfig())
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" rows are fp32; tf32 rows say so
        torch.backends.cudnn.allow_tf32 = False
    if args.compile_batches:
        setup.compile_batches = args.compile_batches
    return setup


def sections(args: argparse.Namespace, setup: Setup, run: Run) -> list[Section]:
    smoke = setup.smoke
    listed = [
        Section("env", lambda: env(run), cap_s=60),
        Section("flops", lambda: flops(run, setup), cap_s=90),
        Section("agreement", lambda: agreements(run, setup), cap_s=150),
        Section("train", lambda: train(run, setup), cap_s=150),
        Section("encoder", lambda: encoders(run, setup, "encoder", ("bf16", "fp32")), cap_s=120),
        Section("search", lambda: search(run, setup), cap_s=150),
        Section(
            "encoder_more",
            lambda: encoders(run, setup, "encoder_more", ("tf32", "fp16")),
            cap_s=120,
            optional=True,
            estimate_s=0 if smoke else 40,
        ),
    ]
    if not args.no_compile:
        compile_cap = 600 if smoke else 400
        listed.append(
            Section(
                "compile",
                lambda: compiled(run, setup),
                cap_s=compile_cap,
                optional=True,
                estimate_s=setup.compile_estimate_s,
            )
        )
    return listed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        caps = {name: float(s) for name, s in (c.split("=", 1) for c in args.section_cap)}
    except ValueError:
        print("gpu_check: --section-cap takes NAME=SECONDS", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    name = "cpu (smoke)" if args.smoke else "no CUDA device"
    if cuda and not args.smoke:
        try:
            name = torch.cuda.get_device_name(0)
        except RuntimeError as error:
            name = f"cuda (name unavailable: {error})"
    say(f"gpu_check on {name}, torch {torch.__version__}, budget {args.budget:.0f} s")
    run = Run(
        out=args.out,
        budget_s=args.budget,
        header={"check": "gpu_check", "mode": "smoke" if args.smoke else "full", "device": name},
        fail=set(args.fail_section),
        hang=set(args.hang_section),
        caps=caps,
        grace_s=args.grace,
    )
    if IMPORT_ERROR is not None:
        run.run([Section("env", lambda: env(run), cap_s=60)])
        print(f"gpu_check: the project does not import: {IMPORT_ERROR}", file=sys.stderr)
        return 1
    if args.flops_only or (not args.smoke and not cuda):
        # versions and FLOPs need no GPU; a CUDA that fails to start is a finding too
        setup = Setup(smoke=False, device=torch.device("cpu"), config=SONANetConfig())
        status = run.run(
            [
                Section("env", lambda: env(run), cap_s=60),
                Section("flops", lambda: flops(run, setup), cap_s=90),
            ]
        )
        if args.flops_only:
            return status
        print("gpu_check: no CUDA device; use --smoke for the CPU dry run", file=sys.stderr)
        return 2
    setup = make_setup(args)
    return run.run(sections(args, setup, run))


if __name__ == "__main__":
    sys.exit(main())
