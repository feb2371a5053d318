"""A checkpoint exported to ONNX (fp32, or static int8), then checked against PyTorch.

The check embeds the same crops with PyTorch fp32 and with ONNX Runtime, and prints the
largest difference of the vectors and how many crops keep an identical top 10 when each is
searched against the others: the numbers a user needs before switching backends. An fp32
export that differs by more than ``FP32_TOLERANCE`` fails the command.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["FP32_TOLERANCE", "export_and_check"]

FP32_TOLERANCE = 1e-4


def _check_crops(folder: Path | None, count: int, size: tuple[int, int], tmp: Path):
    from model.preprocess import image_files, load_crops

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
    from model.export import export_checkpoint
    from model.preprocess import image_files, load_crops

    for folder in (calibrate, check):  # before anything is written
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"{folder}: the folder does not exist")
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
        f"{result['topk_overlap']:.3f}, same top-10 up to near-ties "
        f"{result['same_ranking']:.1%} (identical {result['identical_topk']:.1%})"
    )
    if not int8 and result["max_abs_diff"] > FP32_TOLERANCE:
        raise RuntimeError(
            f"the fp32 export differs from PyTorch by {result['max_abs_diff']:.2e} "
            f"(> {FP32_TOLERANCE}); do not serve it"
        )
    return result
