"""The dataset on disk: identities split into train, query and gallery, Market-1501 names."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from training.datasets.base import DatasetError

from .camera import make_camera
from .identity import make_identity
from .render import SUPERSAMPLE, render
from .streams import CAMERA, DISTRACTOR, FRAME, IDENTITY, IMAGE, SPLIT, stream

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "SPLITS",
    "SyntheticSummary",
    "is_complete",
    "make_dataset",
    "read_metadata",
]

FORMAT = "market1501"
METADATA_FILE = "synthetic.json"
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
_VERSION = 1


@dataclass
class SyntheticSummary:
    """What make_dataset wrote: where, how much, and how long it took."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        c = self.counts
        return "\n".join(
            [
                f"synthetic Market-1501-style dataset at {self.root} ({self.elapsed_s:.1f} s)",
                f"  train    {c['train_identities']:>6} ids {c['train_images']:>7} images",
                f"  query    {c['query_identities']:>6} ids {c['query_images']:>7} images",
                f"  gallery  {c['gallery_identities']:>6} ids {c['gallery_images']:>7} images "
                f"(of which {c['distractor_images']} distractors labelled 0000)",
            ]
        )


def is_complete(root: str | os.PathLike[str]) -> bool:
    """True when root holds a finished synthetic dataset (its metadata is written last)."""
    return (Path(root) / METADATA_FILE).is_file()


def read_metadata(root: str | os.PathLike[str]) -> dict:
    """The parameters and counts of a finished dataset; an interrupted one raises DatasetError."""
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        raise DatasetError(
            f"{root}: no {METADATA_FILE}; not a synthetic dataset, or its "
            "generation was interrupted (regenerate with overwrite)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{path}: unexpected format {meta.get('format')!r}")
    return meta


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            state = (
                "a synthetic dataset"
                if is_complete(root)
                else "an incomplete synthetic dataset"
                if any((root / s).exists() for s in SPLITS)
                else "other files"
            )
            raise FileExistsError(
                f"{root} is not empty (it holds {state}); "
                "pass overwrite=True (--overwrite) to replace it"
            )
        # Metadata first: if clearing is interrupted, the folder reads as incomplete.
        (root / METADATA_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            if (root / split).is_dir():
                shutil.rmtree(root / split)
            elif (root / split).exists():
                (root / split).unlink()
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)


def make_dataset(
    root: str | os.PathLike[str],
    identities: int = 100,
    cameras: int = 6,
    *,
    images_per_camera: int = 3,
    distractors: int | None = None,
    image_size: tuple[int, int] = (128, 64),
    seed: int = 0,
    train_fraction: float = 0.5,
    quality: int = 90,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write a seeded synthetic re-ID dataset under root in the Market-1501 layout.

    Identities 1..n_train go to bounding_box_train; the rest are test identities, each with one
    query per camera it appears in and its other images in bounding_box_test, plus
    ``distractors`` extra identities (default identities // 5) labelled 0000 in the gallery.
    Every identity appears in at least two cameras, so every query has a cross-camera match.
    synthetic.json is written last; a folder without it is an interrupted run.
    """
    start = time.perf_counter()
    if distractors is None:
        distractors = identities // 5
    height, width = (int(v) for v in image_size)
    n_train = round(identities * train_fraction)
    if not 2 <= cameras <= 9:
        raise ValueError(
            f"cameras must be 2..9 (a Market name holds one camera digit), got {cameras}"
        )
    if identities < 2 or identities > 9999:
        raise ValueError(f"identities must be 2..9999, got {identities}")
    if not 1 <= n_train < identities:
        raise ValueError(
            f"train_fraction {train_fraction} leaves no train or no test identity "
            f"out of {identities}"
        )
    if images_per_camera < 2:
        raise ValueError("images_per_camera must be at least 2 (one query, one gallery image)")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if (identities + distractors) * images_per_camera > 999_000:
        raise ValueError("too many images for Market's six-digit frame numbers")
    if height < 16 or width < 8:
        raise ValueError(f"image_size must be at least 16x8, got {height}x{width}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")

    root = Path(root)
    _prepare(root, overwrite)
    big = (height * SUPERSAMPLE, width * SUPERSAMPLE)
    cams = [make_camera(stream(seed, CAMERA, c), *big) for c in range(cameras)]
    # Frame numbers rise through each camera's footage and must stay within six digits.
    per_camera = (identities + distractors) * images_per_camera
    step = min(40, 999_000 // per_camera)
    frames = [int(stream(seed, CAMERA, c, 1).integers(1, 500)) for c in range(cameras)]
    counts = dict.fromkeys(
        ("train_images", "query_images", "gallery_images", "distractor_images"), 0
    )

    def write(split: str, pid: int, cam: int, image: Image.Image) -> None:
        frames[cam] += int(stream(seed, FRAME, pid, cam, frames[cam]).integers(1, step + 1))
        name = f"{pid:04d}_c{cam + 1}s1_{frames[cam]:06d}_01.jpg"
        image.save(root / split / name, format="JPEG", quality=quality)

    def camera_subset(rng: np.random.Generator, minimum: int, maximum: int) -> list[int]:
        k = int(rng.integers(minimum, maximum + 1))
        return sorted(int(c) for c in rng.choice(cameras, size=k, replace=False))

    for pid in range(1, identities + 1):
        person = make_identity(stream(seed, IDENTITY, pid))
        test = pid > n_train
        for cam in camera_subset(stream(seed, SPLIT, pid), 2, cameras):
            query_k = int(stream(seed, SPLIT, pid, cam).integers(images_per_camera))
            for k in range(images_per_camera):
                rng = stream(seed, IMAGE, pid, cam, k)
                image = render(person, cams[cam], (height, width), rng)
                split = (
                    "bounding_box_train"
                    if not test
                    else "query"
                    if k == query_k
                    else "bounding_box_test"
                )
                write(split, pid, cam, image)
                key = {
                    "bounding_box_train": "train_images",
                    "query": "query_images",
                    "bounding_box_test": "gallery_images",
                }[split]
                counts[key] += 1

    for d in range(distractors):
        person = make_identity(stream(seed, DISTRACTOR, d))
        for cam in camera_subset(stream(seed, DISTRACTOR, d, 1), 1, 2):
            for k in range(images_per_camera):
                rng = stream(seed, DISTRACTOR, d, cam, k)
                image = render(
                    person, cams[cam], (height, width), rng, bad_detection=bool(rng.random() < 0.4)
                )
                write("bounding_box_test", 0, cam, image)
                counts["gallery_images"] += 1
                counts["distractor_images"] += 1

    counts |= {
        "train_identities": n_train,
        "query_identities": identities - n_train,
        "gallery_identities": identities - n_train,
        "distractor_identities": distractors,
    }
    meta = {
        "format": FORMAT,
        "generator": "training.synthetic",
        "version": _VERSION,
        "seed": seed,
        "parameters": {
            "identities": identities,
            "cameras": cameras,
            "images_per_camera": images_per_camera,
            "distractors": distractors,
            "image_size": [height, width],
            "train_fraction": train_fraction,
            "quality": quality,
        },
        "counts": counts,
        "splits": {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"},
    }
    tmp = root / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, root / METADATA_FILE)
    return SyntheticSummary(root=root, counts=counts, elapsed_s=time.perf_counter() - start)
