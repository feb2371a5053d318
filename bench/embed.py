"""Embedding throughput: the naive path against ours, every CPU variant, and what each costs.

Everything runs side by side in one process on the same crops (synthetic JPEGs), from JPEG
bytes to flip-averaged, L2-normalised vectors:

* **naive**: what torchreid's feature extractor does: per image, Pillow decode, Pillow resize,
  ``ToTensor`` + ``Normalize``, an eager fp32 forward at batch 1 (twice: the image and its
  mirror, as flip-averaging needs);
* **variants** at ``--batch`` of the paper configuration (depth 50, SONA2+3, 384x128): PyTorch
  fp32 (NCHW, channels_last), bf16 autocast (where the CPU has bf16 instructions),
  ``torch.compile``, and the fp32 and static int8 exports (calibrated on training crops) in
  ONNX Runtime and in OpenVINO; with ``--int8-variants``, the other int8 formats (QOperator,
  per-tensor, u8 weights, reduced range); each with its speed-up over naive and over PyTorch
  fp32, and its agreement with fp32 (cosine of the vectors, top-10 overlap among the crops);
* **sweep**: the chosen default at batch 1, 8, 32, 64 against naive: images/s, p50/p99 batch
  latency, achieved GFLOP/s (from ``sona info``'s multiply-adds) against a large GEMM's;
* **rankings** (``--checkpoint`` of a trained network and its synthetic ``--data``; by default
  the demo's, trained once into ``runs/bench-embed``): rank-1, mAP and top-10 overlap of every
  variant against fp32 with the trained weights.

The paper configuration has random weights here (no trained one fits on these machines), so
its agreement is about numerics; the rankings table measures what quantisation does to a
trained network's search results. The report names the CPU's instruction sets: which variant
wins depends on them (AVX2, AVX-512, VNNI, BF16, AMX). Reference GEMM peaks are measured only
for the precisions the CPU computes natively, so every run ends in bounded time.

    python bench/embed.py --no-compile --crops 32       # about 15 minutes on 2 cores
    python bench/embed.py                               # with torch.compile: much longer
    python bench/embed.py --quick                       # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.io import decode_jpeg

from model import PRESETS, SONANet, load_checkpoint
from model.cpu import cpu_has_bf16, cpu_info
from model.encoders import Encoder, OnnxEncoder, OpenVinoEncoder, TorchEncoder, agreement
from model.export import export_onnx, quantize_int8
from model.info import describe
from model.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize, resize
from training.datasets import load_dataset
from training.demo import build_demo, demo_data
from training.evaluation import cmc_map, cosine_distance

Factory = Callable[[], Encoder]


# --- the two paths --------------------------------------------------------------------------


def naive_embed(net: SONANet, jpeg: bytes) -> np.ndarray:
    """One image the way a per-image feature extractor does it."""
    h, w = net.config.input_size
    transform = T.Compose(
        [T.Resize((h, w)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    with torch.inference_mode():
        x = transform(Image.open(io.BytesIO(jpeg)).convert("RGB")).unsqueeze(0)
        a, b = net(x), net(x.flip(-1))
        v = (a + b) / 2
        return (v / v.norm(dim=1, keepdim=True)).numpy()


def crop(jpeg: bytes, size: tuple[int, int]) -> torch.Tensor:
    """The service's decode: torchvision's JPEG decoder, then the uint8 resize."""
    return resize(decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)), size)


def ours(encoder: Encoder, jpegs: list[bytes]) -> np.ndarray:
    """The service's path: decode and resize each crop, one batched encoder call."""
    return encoder(torch.stack([crop(j, encoder.input_size) for j in jpegs]))


# --- measurement ----------------------------------------------------------------------------


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def rounds(
    runs: dict[str, tuple[Callable[[list[bytes]], np.ndarray], int, int]],
    jpegs: list[bytes],
    seconds: float,
    min_rounds: int = 3,
) -> dict[str, list[float]]:
    """Per-batch latencies of every run, interleaved round by round.

    ``runs`` maps a name to (run, batch size, batches per round). Each round gives every run
    its batches in turn (cycling through the crops), so a load that comes and goes on a shared
    machine weighs on all of them alike and their ratios stay fair. Rounds go on until
    ``seconds`` have passed (and at least ``min_rounds``).
    """
    for run, batch, _ in runs.values():  # warm-up: lazy initialisation, first allocations
        run(jpegs[:batch])
    latencies: dict[str, list[float]] = {name: [] for name in runs}
    cursor = 0
    start = time.perf_counter()
    done = 0
    while done < min_rounds or time.perf_counter() - start < seconds:
        for name, (run, batch, repeat) in runs.items():
            for _ in range(repeat):
                chunk = [jpegs[(cursor + i) % len(jpegs)] for i in range(batch)]
                cursor += batch
                t = time.perf_counter()
                run(chunk)
                latencies[name].append(time.perf_counter() - t)
        done += 1
    return latencies


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def gemm_peaks() -> dict[str, float | None]:
    """Reference peaks: fp32 in PyTorch, int8 in ONNX Runtime's u8 x s8 GEMM (the kernel its
    int8 convolutions use, fast on every x86 CPU), bf16 only where the CPU has bf16
    instructions: elsewhere PyTorch's bf16 fallback runs under 1 GFLOP/s and would take
    minutes to measure nothing useful (None).
    """
    return {
        "fp32": gemm_peak(torch.float32),
        "bf16": gemm_peak(torch.bfloat16) if cpu_has_bf16() else None,
        "int8": int8_gemm_peak(),
    }


def int8_gemm_peak(n: int = 3072) -> float:
    """GOP/s of ONNX Runtime's MatMulInteger (u8 activations x s8 weights), best of 5."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8-gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    a = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    session.run(None, a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        session.run(None, a)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def gemm_peak(dtype: torch.dtype, n: int = 3072) -> float:
    """GFLOP/s of a large square matrix product in PyTorch on these threads, best of 5."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    mm = torch.mm
    mm(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# --- variants -------------------------------------------------------------------------------


def calibration_batches(records, size: tuple[int, int], count: int, batch: int = 8):
    """Normalised training crops for int8 calibration, spread over identities."""
    step = max(1, len(records) // count)
    chosen = records[::step][:count]
    crops = torch.stack([crop(Path(r.path).read_bytes(), size) for r in chosen])
    for i in range(0, len(crops), batch):
        yield normalize(crops[i : i + batch]).numpy()


#: int8 formats beside the default (QDQ, per-channel s8 weights): ``quantize_int8`` options.
INT8_VARIANTS = {
    "qoperator": {"quant_format": "qoperator"},
    "per-tensor": {"per_channel": False},
    "u8 weights": {"weights": "u8"},
    "reduce-range": {"reduce_range": True},
}


def variants(
    net: SONANet,
    workdir: Path,
    calibration: list,
    *,
    compile: bool,
    bf16: bool,
    int8_variants: bool = False,
) -> dict[str, Factory]:
    """The candidate encoders of ``net``, built lazily (exports and compilation take a while)."""

    def export(int8: str | None) -> Path:
        fp32 = workdir / "fp32.onnx"
        if not fp32.exists():
            export_onnx(net, fp32)
        if int8 is None:
            return fp32
        path = workdir / f"int8-{int8.replace(' ', '-')}.onnx"
        if not path.exists():
            quantize_int8(fp32, path, iter(calibration), **INT8_VARIANTS.get(int8, {}))
        return path

    def ort(int8: str | None = None, **options) -> Factory:
        return lambda: OnnxEncoder(export(int8), **options)

    def openvino(int8: str | None = None, **options) -> Factory:
        return lambda: OpenVinoEncoder(export(int8), **options)

    def torch_encoder(**options) -> Factory:  # a copy each: TorchEncoder converts in place
        return lambda: TorchEncoder(copy.deepcopy(net), **options)

    found: dict[str, Factory] = {  # the first is the reference of the others
        "torch fp32 channels_last": torch_encoder(),
        "torch fp32": torch_encoder(channels_last=False),
    }
    if bf16:
        found["torch bf16 channels_last"] = torch_encoder(bf16=True)
    if compile:
        found["torch fp32 compiled"] = torch_encoder(compile=True)
        if bf16:
            found["torch bf16 compiled"] = torch_encoder(bf16=True, compile=True)
    found["onnxruntime fp32"] = ort()
    found["onnxruntime int8"] = ort("default")
    found["onnxruntime int8 spinning"] = ort("default", spinning=True)
    if int8_variants:
        for name in INT8_VARIANTS:
            found[f"onnxruntime int8 {name}"] = ort(name)
    if OpenVinoEncoder.available():
        found["openvino fp32"] = openvino()
        found["openvino int8"] = openvino("default")
        if bf16:
            found["openvino int8 bf16"] = openvino("default", bf16=True)
    return found


def keep(factories: dict[str, Factory], only: str | None) -> dict[str, Factory]:
    """The reference (first) variant and those whose name holds one of ``only``'s parts."""
    if not only:
        return factories
    parts = only.split(",")
    first = next(iter(factories))
    return {
        name: f
        for name, f in factories.items()
        if name == first or any(part in name for part in parts)
    }


# --- sections -------------------------------------------------------------------------------


def naive_run(net: SONANet) -> Callable[[list[bytes]], np.ndarray]:
    return lambda chunk: np.concatenate([naive_embed(net, j) for j in chunk])


def ours_run(encoder: Encoder) -> Callable[[list[bytes]], np.ndarray]:
    return lambda chunk: ours(encoder, chunk)


def section_variants(net, jpegs, factories, batch, seconds):
    """Every variant and naive, interleaved; returns each variant's embeddings/s."""
    size = net.config.input_size
    print(
        f"\n## Variants: depth {net.config.depth} at {size[0]}x{size[1]}, batch {batch}, "
        f"{len(jpegs)} crops\n"
    )
    encoders, builds, vectors = {}, {}, {}
    for name, factory in factories.items():
        start = time.perf_counter()
        encoders[name] = factory()
        encoders[name](torch.zeros(batch, 3, *encoders[name].input_size, dtype=torch.uint8))
        builds[name] = time.perf_counter() - start
        vectors[name] = np.concatenate([ours(encoders[name], c) for c in chunks(jpegs, batch)])
    runs = {"naive": (naive_run(net), 1, batch)}
    runs |= {name: (ours_run(e), batch, 1) for name, e in encoders.items()}
    latencies = rounds(runs, jpegs, seconds)
    naive_rate = 1 / statistics.mean(latencies["naive"])
    print(
        f"naive (per image: Pillow, eager fp32 at batch 1): {naive_rate:.2f} embeddings/s, "
        f"{1000 / naive_rate:.0f} ms each; {len(latencies['naive']) // batch} rounds\n"
    )
    print(
        "| variant | embeddings/s | ms/image | vs naive | vs torch fp32 channels_last "
        "| build s | min cosine vs fp32 | top-10 overlap vs fp32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    reference = vectors[next(iter(vectors))]
    rates = {name: batch / statistics.mean(latencies[name]) for name in encoders}
    base = rates.get("torch fp32 channels_last", next(iter(rates.values())))
    for name, rate in rates.items():
        close = agreement(reference, vectors[name])
        print(
            f"| {name} | {rate:.2f} | {1000 / rate:.0f} | {rate / naive_rate:.2f}x | "
            f"{rate / base:.2f}x | {builds[name]:.0f} | {close['min_cosine']:.5f} | "
            f"{close['topk_overlap']:.3f} |",
            flush=True,
        )
    return rates


def section_sweep(net, jpegs, encoder, sizes, seconds, macs, peaks):
    """The chosen encoder at each batch size against naive, interleaved."""
    per_round = max(sizes)
    runs = {"naive": (naive_run(net), 1, max(1, per_round // 8))}
    runs |= {size: (ours_run(encoder), size, per_round // size) for size in sizes}
    latencies = rounds(runs, jpegs, seconds)
    naive_rate = 1 / statistics.mean(latencies["naive"])
    print(f"\n## Sweep: naive against {encoder.name}, interleaved\n")
    print(
        "| path | batch | batches timed | embeddings/s | vs naive | p50 ms/batch "
        "| p99 ms/batch | GFLOP/s | of GEMM peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    precision = "int8" if "int8" in encoder.name else "bf16" if "bf16" in encoder.name else "fp32"
    for name, lat in latencies.items():
        batch = 1 if name == "naive" else name
        rate = batch / statistics.mean(lat)
        gflops = 2 * macs * rate / 1e9
        peak = peaks["fp32" if name == "naive" else precision]
        label = "naive (Pillow, eager fp32)" if name == "naive" else encoder.name
        print(
            f"| {label} | {batch} | {len(lat)} | {rate:.2f} | {rate / naive_rate:.2f}x | "
            f"{1000 * p(lat, 50):.0f} | {1000 * p(lat, 99):.0f} | {gflops:.0f} | "
            f"{f'{gflops / peak:.0%}' if peak else 'n/a'} |",
            flush=True,
        )


def section_rankings(
    checkpoint: Path,
    data: Path,
    workdir: Path,
    compile: bool,
    bf16: bool,
    int8_variants: bool,
    only: str | None,
):
    net, _ = load_checkpoint(checkpoint)
    dataset = load_dataset("market1501", data)
    size = net.config.input_size

    def crops(records):
        return torch.stack([crop(Path(r.path).read_bytes(), size) for r in records])

    q_img, g_img = crops(dataset.query), crops(dataset.gallery)
    q_pid = np.array([r.pid for r in dataset.query])
    g_pid = np.array([r.pid for r in dataset.gallery])
    q_cam = np.array([r.camid for r in dataset.query])
    g_cam = np.array([r.camid for r in dataset.gallery])
    calibration = list(calibration_batches(dataset.train, size, 256, batch=32))
    factories = variants(
        net,
        workdir / "trained",
        calibration,
        compile=compile,
        bf16=bf16,
        int8_variants=int8_variants,
    )
    factories = keep(factories, only)
    c = net.config
    print(
        f"\n## Rankings: trained {checkpoint} (depth {c.depth}, "
        f"{c.input_size[0]}x{c.input_size[1]}), {len(q_img)} queries, {len(g_img)} gallery\n"
    )
    print("| variant | rank-1 % | mAP % | Δ rank-1 | Δ mAP | top-10 overlap | identical top-10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ref, found = None, {}
    for name, factory in factories.items():
        encoder = factory()
        q = np.concatenate([encoder(b) for b in q_img.split(64)])
        g = np.concatenate([encoder(b) for b in g_img.split(64)])
        dist = cosine_distance(q, g)
        cmc, mean_ap = cmc_map(dist, q_pid, g_pid, q_cam, g_cam)
        order = np.argsort(dist, axis=1)[:, :10]
        if ref is None:
            ref = (cmc[0], mean_ap, order)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(order, ref[2], strict=True)])
        same = np.mean([list(a) == list(b) for a, b in zip(order, ref[2], strict=True)])
        print(
            f"| {name} | {100 * cmc[0]:.2f} | {100 * mean_ap:.2f} | "
            f"{100 * (cmc[0] - ref[0]):+.2f} | {100 * (mean_ap - ref[1]):+.2f} | "
            f"{overlap:.3f} | {same:.1%} |",
            flush=True,
        )
        found[name] = {
            "rank1": 100 * cmc[0],
            "map": 100 * mean_ap,
            "d_rank1": 100 * (cmc[0] - ref[0]),
            "d_map": 100 * (mean_ap - ref[1]),
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8, help="batch of the variants table")
    parser.add_argument("--sizes", default="1,8,32,64", help="batch sizes of the sweep")
    parser.add_argument("--crops", type=int, default=64, help="distinct crops timed")
    parser.add_argument(
        "--seconds",
        type=float,
        default=120,
        help="timing budget of each table (at least 3 interleaved rounds)",
    )
    parser.add_argument("--default", help="variant of the sweep (default: the fastest)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--data", type=Path, help="a synthetic set (default: the demo's, made if missing)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="trained, for the rankings (default: the demo's)"
    )
    parser.add_argument(
        "--demo-dir",
        type=Path,
        default=Path("runs/bench-embed"),
        help="where the default data and checkpoint are made once and kept",
    )
    parser.add_argument(
        "--int8-variants", action="store_true", help="also the other int8 formats (slower)"
    )
    parser.add_argument("--only", help="comma-separated substrings: variants to keep")
    parser.add_argument("--quick", action="store_true", help="tiny config, short budgets")
    parser.add_argument("--threads", type=int, help="threads for PyTorch and ONNX Runtime")
    parser.add_argument("--sections", default="speed,rankings", help="speed, rankings or both")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.config, args.seconds, args.crops, args.sizes = "tiny", 2, 16, "1,8"
    if args.threads:
        torch.set_num_threads(args.threads)  # ONNX Runtime sessions follow torch's count
    torch.manual_seed(0)
    bf16 = cpu_has_bf16()
    compile_ok = not args.no_compile
    sections = set(args.sections.split(","))
    if args.checkpoint is None and "rankings" in sections:  # trains once, kept in demo_dir
        demo = build_demo(args.demo_dir, progress=False)
        args.data, args.checkpoint = args.data or demo.data, demo.checkpoint
    if args.data is None:  # crops to time and to calibrate with: no training needed
        args.data = demo_data(args.demo_dir, log=lambda _: None)

    config = PRESETS[args.config]
    net = SONANet(config, load_backbone_weights=False).eval()
    info = describe(config)
    dataset = load_dataset("market1501", args.data)
    peaks = gemm_peaks()
    print(
        f"# bench/embed.py: {cpu_info().describe()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, kernels "
        f"{torch.backends.cpu.get_cpu_capability()}), bf16 instructions: {bf16}"
    )
    print(
        f"config {args.config}: depth {config.depth}, SONA {config.sona_stages}, input "
        f"{config.input_size[0]}x{config.input_size[1]}, {info.macs / 1e9:.2f} GMACs per "
        f"forward, {info.macs_per_embedding / 1e9:.2f} per flip-averaged embedding"
    )
    print(
        "GEMM peaks on these threads (3072^3, best of 5; int8: ONNX Runtime's u8 x s8): "
        + ", ".join(
            f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s"
            if v
            else f"{k} skipped (not native on this CPU)"
            for k, v in peaks.items()
        )
    )

    report = {"cpu": cpu_info().describe(), "class": cpu_info().isa_class, "config": args.config}
    with tempfile.TemporaryDirectory(prefix="sona-bench-embed-") as tmp:
        if "speed" in sections:
            report["speed"] = speed(args, net, dataset, Path(tmp), info, peaks, compile_ok, bf16)
        if "rankings" in sections:
            report["rankings"] = section_rankings(
                args.checkpoint,
                args.data,
                Path(tmp),
                compile_ok,
                bf16,
                args.int8_variants,
                args.only,
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def speed(args, net, dataset, tmp: Path, info, peaks, compile_ok: bool, bf16: bool):
    """The variants table, then the sweep of the fastest variant (or ``--default``)."""
    jpegs = [Path(r.path).read_bytes() for r in dataset.gallery[: args.crops]]
    calibration = list(calibration_batches(dataset.train, net.config.input_size, 64))
    factories = variants(
        net, tmp, calibration, compile=compile_ok, bf16=bf16, int8_variants=args.int8_variants
    )
    factories = keep(factories, args.only)
    rates = section_variants(net, jpegs, factories, args.batch, args.seconds)
    default = args.default or max(rates, key=rates.get)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        section_sweep(
            net, jpegs, factories[default](), sizes, args.seconds, info.macs_per_embedding, peaks
        )
    return rates


if __name__ == "__main__":
    main()
