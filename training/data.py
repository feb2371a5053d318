"""Images for training and evaluation: decoded and resized once, augmented in batches.

A dataset decodes each image once (into memory when ``preload``, else per access in
DataLoader workers) at the network's input size as uint8, a quarter of float32's size. The
random training augmentation then runs on whole batches on the training device, per sample:
horizontal flip, ImageNet normalisation and cutout. The host only moves uint8 through pinned
memory, and the GPU is not kept waiting on per-image Python transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from model.preprocess import load_image, normalize, resize

from .datasets import ImageRecord

__all__ = ["BatchAugment", "ImageDataset", "eval_loader"]


class ImageDataset(Dataset):
    """``(uint8 [3, H, W], pid, camid)`` for each record, at ``size`` = (height, width)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        size: tuple[int, int],
        *,
        preload: bool = True,
        threads: int = 4,
    ) -> None:
        self.records = list(records)
        self.size = tuple(size)
        self.pids = torch.tensor([r.pid for r in self.records], dtype=torch.long)
        self.camids = torch.tensor([r.camid for r in self.records], dtype=torch.long)
        self.images: torch.Tensor | None = None
        if preload and self.records:
            # Pillow releases the GIL while decoding, so threads decode in parallel.
            with ThreadPoolExecutor(max_workers=threads) as pool:
                self.images = torch.stack(list(pool.map(self._decode, range(len(self.records)))))

    def _decode(self, index: int) -> torch.Tensor:
        return resize(load_image(self.records[index].path), self.size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.images[index] if self.images is not None else self._decode(index)
        return image, int(self.pids[index]), int(self.camids[index])


def eval_loader(
    dataset: ImageDataset, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """Batches in order; workers only where images are decoded per access."""
    preloaded = dataset.images is not None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=0 if preloaded else workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


class BatchAugment:
    """Per-sample flip, normalisation and cutout on a uint8 batch, on the batch's device.

    Random numbers come from ``generator`` (CPU), so a run is reproducible on any device and
    resumable from the generator's saved state. Cutout (DeVries & Taylor 2017) zeroes a
    ``cutout`` x ``cutout`` square centred anywhere in the image (clipped at the edges), after
    normalisation, i.e. it paints the mean colour.
    """

    def __init__(self, cutout: int, cutout_prob: float = 0.5, flip_prob: float = 0.5) -> None:
        self.cutout = cutout
        self.cutout_prob = cutout_prob
        self.flip_prob = flip_prob

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        flip = torch.rand(b, generator=generator) < self.flip_prob
        cut = torch.rand(b, generator=generator) < self.cutout_prob
        cy = torch.randint(h, (b,), generator=generator)
        cx = torch.randint(w, (b,), generator=generator)
        device = images.device
        x = normalize(images)
        flip = flip.to(device).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
        if self.cutout > 0 and self.cutout_prob > 0:
            half = self.cutout // 2
            top = (cy - half).to(device).view(b, 1)
            left = (cx - half).to(device).view(b, 1)
            rows = torch.arange(h, device=device).view(1, h)
            cols = torch.arange(w, device=device).view(1, w)
            in_rows = (rows >= top) & (rows < top + self.cutout)  # [b, h]
            in_cols = (cols >= left) & (cols < left + self.cutout)  # [b, w]
            square = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # [b, h, w]
            square &= cut.to(device).view(b, 1, 1)
            x = x.masked_fill(square.unsqueeze(1), 0.0)
        return x
