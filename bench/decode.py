"""Decode speed of upload bytes: Pillow (the training path) against torchvision.io.

The service must hand the network exactly the pixels training's evaluation sees, and training
decodes with Pillow (``model.preprocess.load_image``). torchvision's decoders are an option
only where they give identical pixels, so each case is timed and compared pixel for pixel
against Pillow ("torchvision us" is ``torchvision.io.decode_image`` from bytes, its output a
channels-last view, not copied). Also timed: ``service.imaging.decode_image``, the validating
path the service runs (header checks, PNG CRC walk, then the decode), with ``decoder="pillow"``
and with the default ``"auto"``, which lets torchvision decode plain RGB/grey JPEGs. Prints a
Markdown table of per-image microseconds, best of 5 repeats (a busy machine inflates the
figures less than with a mean); it never asserts times.

    python bench/decode.py                  # about 5 s
    python bench/decode.py --seconds 0.2    # steadier figures
"""

from __future__ import annotations

import argparse
import io
import platform
import timeit
import warnings
from collections.abc import Callable

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image

from model.preprocess import pil_to_tensor
from service.imaging import decode_image

# torchvision 0.29 deprecates its image codecs (superseded by TorchCodec); measuring them is
# the point here, so the warning is silenced for this script only.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\..*")
from torchvision.io import ImageReadMode  # noqa: E402
from torchvision.io import decode_image as tv_decode_image  # noqa: E402

SIZES = ((128, 64), (384, 128))
CASES = (
    ("JPEG q90 4:2:0", "JPEG", {"quality": 90}),
    ("JPEG q95 4:4:4", "JPEG", {"quality": 95, "subsampling": 0}),
    ("PNG", "PNG", {}),
    ("WebP q90", "WEBP", {"quality": 90}),
)


def synthetic_crop(height: int, width: int, seed: int = 0) -> Image.Image:
    """A crop-like picture: smooth background, a few coloured blobs, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([90 + 60 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], axis=-1)
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(height / 10, height / 4), rng.uniform(width / 8, width / 3)
        mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        image[mask] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, options: dict) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow(data: bytes) -> torch.Tensor:
    """What ``model.preprocess.load_image`` does, from bytes instead of a path."""
    with Image.open(io.BytesIO(data)) as image:
        return pil_to_tensor(image)


def torchvision_io(data: bytes) -> torch.Tensor:
    # bytearray: torch.frombuffer wants a writable buffer (the copy is part of the cost).
    return tv_decode_image(
        torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
    )


def service_auto(data: bytes) -> torch.Tensor:
    return decode_image(data, decoder="auto").pixels


def service_pillow(data: bytes) -> torch.Tensor:
    return decode_image(data, decoder="pillow").pixels


def per_image_us(fn: Callable[[bytes], object], data: bytes, seconds: float) -> float:
    """Best-of-5 mean time of one call, each repeat lasting about ``seconds / 5``."""
    timer = timeit.Timer(lambda: fn(data))
    once = max(timer.timeit(3) / 3, 1e-7)
    number = max(1, int(seconds / 5 / once))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=0.06, help="time budget per case and decoder"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(
        f"Pillow {PIL.__version__}, torchvision {torchvision.__version__}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}; "
        "per-image microseconds, best of 5 repeats, one thread\n"
    )
    print(
        "| case | size (h x w) | bytes | Pillow us | torchvision us | Pillow/tv | "
        "identical | max abs diff | decode_image pillow us | decode_image auto us |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for height, width in SIZES:
        crop = synthetic_crop(height, width)
        for name, fmt, options in CASES:
            data = encode(crop, fmt, options)
            reference, other = pillow(data), torchvision_io(data)
            same = reference.shape == other.shape and torch.equal(reference, other)
            diff = (
                int((reference.int() - other.int()).abs().max())
                if reference.shape == other.shape
                else -1
            )
            t_pil = per_image_us(pillow, data, args.seconds)
            t_tv = per_image_us(torchvision_io, data, args.seconds)
            t_pillow = per_image_us(service_pillow, data, args.seconds)
            t_auto = per_image_us(service_auto, data, args.seconds)
            print(
                f"| {name} | {height} x {width} | {len(data)} | {t_pil:.0f} | {t_tv:.0f} | "
                f"{t_pil / t_tv:.2f} | {'yes' if same else 'NO'} | {diff} | {t_pillow:.0f} | "
                f"{t_auto:.0f} |"
            )


if __name__ == "__main__":
    main()
