"""``sona export``: a checkpoint to ONNX (fp32, or static int8), checked against PyTorch.

The check embeds the same crops with PyTorch fp32 and with ONNX Runtime, and prints the
largest difference of the vectors and how many crops keep an identical top 10 when each is
searched against the others: the numbers a user needs before switching backends. An fp32
export that differs by more than ``FP32_TOLERANCE`` fails the command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

__all__ = ["add_export_parser", "export_and_check"]

FP32_TOLERANCE = 1e-4


def _check_crops(folder: Path | None, count: int, size: tuple[int, int], tmp: Path):
    from model.export import image_files, load_crops

    if folder is None:  # a seeded synthetic set: people seen by several cameras
        from .synthetic import make_dataset

        folder = tmp / "synthetic"
        make_dataset(folder, identities=40, cameras=4, seed=1, overwrite=True)
        folder = folder / "bounding_box_test"
    files = image_files(folder, count)
    if len(files) < 11:
        raise ValueError(f"{folder}: needs at least 11 images to compare top-10 rankings")
    return load_crops(files, size)


def export_and_check(
    checkpoint: Path,
    output: Path,
    *,
    int8: bool = False,
    calibrate: Path | None = None,
    calibration_images: int = 256,
    method: str = "minmax",
    check: Path | None = None,
    check_images: int = 200,
    log=print,
) -> dict[str, float]:
    """Export, then compare with PyTorch fp32; returns the agreement figures."""
    import numpy as np

    from model import load_checkpoint
    from model.encoders import OnnxEncoder, TorchEncoder, agreement
    from model.export import export_checkpoint, image_files, load_crops

    net, _ = load_checkpoint(checkpoint)
    size = net.config.input_size
    calibration = None
    if int8:
        if calibrate is None:
            raise ValueError(
                "--int8 needs --calibrate FOLDER: crops like the ones that will be served"
            )
        files = image_files(calibrate, calibration_images)
        if not files:
            raise ValueError(f"--calibrate {calibrate}: no images found")
        log(f"calibrating int8 on {len(files)} crops from {calibrate}")
        calibration = load_crops(files, size)
    export_checkpoint(checkpoint, output, int8=int8, calibration=calibration, method=method)
    with tempfile.TemporaryDirectory(prefix="sona-export-check-") as tmp:
        crops = _check_crops(check, check_images, size, Path(tmp))
    reference = TorchEncoder(net, channels_last=False)
    exported = OnnxEncoder(output)
    result = agreement(
        *(np.concatenate([e(b) for b in crops.split(32)]) for e in (reference, exported))
    )
    log(
        f"wrote {output} ({exported.meta['precision']}, {output.stat().st_size / 2**20:.1f} MiB)"
        f"\nagainst PyTorch fp32 on {len(crops)} crops: max abs difference "
        f"{result['max_abs_diff']:.2e}, min cosine {result['min_cosine']:.6f}, top-10 overlap "
        f"{result['topk_overlap']:.3f}, identical top-10 {result['identical_topk']:.1%}"
    )
    if not int8 and result["max_abs_diff"] > FP32_TOLERANCE:
        raise RuntimeError(
            f"the fp32 export differs from PyTorch by {result['max_abs_diff']:.2e} "
            f"(> {FP32_TOLERANCE}); do not serve it"
        )
    return result


def _cmd_export(args: argparse.Namespace) -> int:
    suffix = ".int8.onnx" if args.int8 else ".onnx"
    output = args.output or args.checkpoint.with_suffix(suffix)
    export_and_check(
        args.checkpoint,
        output,
        int8=args.int8,
        calibrate=args.calibrate,
        calibration_images=args.calibration_images,
        method=args.method,
        check=args.check,
        check_images=args.check_images,
    )
    print(f"serve it: SONA_CHECKPOINT={args.checkpoint} SONA_ONNX_MODEL={output} sona serve")
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's embedding network to ONNX (fp32 or static int8)",
        description="Write the embedding network (normalised float32 [B, 3, H, W] in, "
        "flip-averaged L2-normalised [B, D] out, dynamic batch) to ONNX, then check it "
        "against PyTorch. --int8 quantises it statically with calibration crops: the "
        "fastest way to serve on a CPU (see bench/RESULTS.md).",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "-o", "--output", type=Path, help="default: CHECKPOINT with .onnx or .int8.onnx"
    )
    parser.add_argument("--int8", action="store_true", help="static int8 quantisation")
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="FOLDER",
        help="--int8: crops to calibrate on (searched recursively), like the served ones",
    )
    parser.add_argument("--calibration-images", type=int, default=256, metavar="N")
    parser.add_argument(
        "--method",
        choices=["minmax", "percentile", "entropy"],
        default="minmax",
        help="--int8: how activation ranges are chosen from the calibration crops (minmax "
        "needs the least memory; percentile and entropy grow with the crops)",
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FOLDER",
        help="crops to compare PyTorch and ONNX on (default: a synthetic set)",
    )
    parser.add_argument("--check-images", type=int, default=200, metavar="N")
    parser.set_defaults(handler=_cmd_export)
    return parser
