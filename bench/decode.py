"""Decode speed of upload bytes: Pillow (the training path) against torchvision.io and simplejpeg.

The service must hand the network exactly the pixels training's evaluation sees, and training
decodes with Pillow (``model.preprocess.load_image``). Another decoder is an option only where
it gives identical pixels, so each case is timed and compared pixel for pixel against Pillow
("torchvision us" is ``torchvision.io.decode_image`` from bytes; "simplejpeg us" its strict,
accurate-IDCT decode of JPEGs). Also timed: ``service.imaging.decode_image``, the validating
path the service runs (header checks, strict JPEG scan, PNG CRC walk, then the decode), with
``decoder="pillow"``, with the default ``"auto"`` (simplejpeg for plain RGB/grey JPEGs), and as
the service calls it, with the network's input size (384 x 128): large uploads are then decoded
at a reduced scale. Prints a Markdown table of per-image microseconds, best of 5 repeats (a
busy machine inflates the figures less than with a mean); it never asserts times.

    python bench/decode.py                  # about 5 s
    python bench/decode.py --seconds 0.2    # steadier figures
"""

from __future__ import annotations

import argparse
import io
import timeit
import warnings
from collections.abc import Callable

import numpy as np
import PIL
import simplejpeg
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

from model.cpu import cpu_info  # noqa: E402

SIZES = ((128, 64), (384, 128), (2048, 1024))
NETWORK = (384, 128)
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


def simplejpeg_rgb(data: bytes) -> torch.Tensor:
    array = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
    return torch.from_numpy(array).permute(2, 0, 1)


def service_sized(data: bytes) -> torch.Tensor:
    return decode_image(data, size=NETWORK).pixels


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
        f"simplejpeg {simplejpeg.__version__}, "
        f"torch {torch.__version__}, {cpu_info().describe()}; "
        "per-image microseconds, best of 5 repeats, one thread\n"
    )
    print(
        "| case | size (h x w) | bytes | Pillow us | torchvision us | simplejpeg us | "
        "identical (tv, sj) | decode_image pillow us | decode_image auto us | "
        "decode_image at 384x128 us |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for height, width in SIZES:
        crop = synthetic_crop(height, width)
        for name, fmt, options in CASES:
            data = encode(crop, fmt, options)
            reference = pillow(data)
            others = [torchvision_io] + ([simplejpeg_rgb] if fmt == "JPEG" else [])
            same = []
            for other in others:
                got = other(data)
                same.append("yes" if torch.equal(reference, got) else "NO")
            times = [per_image_us(fn, data, args.seconds) for fn in (pillow, *others)]
            sj = f"{times[2]:.0f}" if fmt == "JPEG" else "-"
            t_pillow = per_image_us(service_pillow, data, args.seconds)
            t_auto = per_image_us(service_auto, data, args.seconds)
            t_sized = per_image_us(service_sized, data, args.seconds)
            print(
                f"| {name} | {height} x {width} | {len(data)} | {times[0]:.0f} | {times[1]:.0f} "
                f"| {sj} | {', '.join(same)} | {t_pillow:.0f} | {t_auto:.0f} | {t_sized:.0f} |"
            )


if __name__ == "__main__":
    main()
