"""The one preprocessing path from decoded pixels to network input.

Training's evaluation, ``sona eval`` and the service all go through these functions, so an
image embedded anywhere gives the same vector: decoded RGB uint8 -> resize to the network's
input size (bilinear, antialiased, on uint8) -> float in [0, 1] -> ImageNet normalisation.
Resizing happens on uint8 so that a dataset can be decoded and resized once and kept in
memory at a quarter of the float size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from client.media import IMAGE_SUFFIXES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "image_files",
    "load_crops",
    "load_image",
    "normalize",
    "pil_to_tensor",
    "resize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB ``uint8 [3, H, W]`` tensor from any Pillow image (EXIF orientation applied).

    Transparency is composited onto black; 16-bit samples are scaled to 8 bits.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        # 16-bit greyscale: keep the high byte (convert() would clip everything above 255)
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            # Composite transparency onto black, the colour training crops' padding has.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def load_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to RGB ``uint8 [3, H, W]``."""
    with Image.open(path) as image:
        return pil_to_tensor(image)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``uint8 [..., 3, h, w]`` to ``size`` = (height, width), bilinear and antialiased."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return TF.resize(
        images, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` (any device) to ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - mean) / std


def image_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; evenly spread when ``limit`` cuts.
    A folder that is not there is a ``ValueError`` that says so (``rglob`` finds nothing)."""
    if not Path(folder).is_dir():
        what = "is a file, not a folder" if Path(folder).exists() else "the folder does not exist"
        raise ValueError(f"{folder}: {what}")
    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if limit is not None and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def load_crops(files: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` through the one preprocessing path (decode, resize)."""
    return torch.stack([resize(load_image(f), size) for f in files])
