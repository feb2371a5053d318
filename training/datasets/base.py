"""The dataset records every loader returns: image path, identity, camera."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["DatasetError", "ImageRecord", "ReIDDataset"]


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message names what is missing or wrong."""


class ImageRecord(NamedTuple):
    path: Path
    pid: int  # identity; in ``train`` relabelled to 0..num_train_pids-1
    camid: int  # camera, 0-based


@dataclass
class ReIDDataset:
    """A re-ID dataset split into training images and a query/gallery test set."""

    name: str
    root: Path
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def summary(self) -> str:
        def line(split: str, records: list[ImageRecord]) -> str:
            pids = len({r.pid for r in records})
            cams = len({r.camid for r in records})
            return f"  {split:<8} {pids:>6} ids {len(records):>7} images {cams:>3} cameras"

        return "\n".join(
            [
                f"{self.name} at {self.root}",
                line("train", self.train),
                line("query", self.query),
                line("gallery", self.gallery),
            ]
        )
