"""Which crops of a track go into the gallery: a few good ones, spread over its time.

Every frame adds a candidate; a crop is usable when the person is at least ``min_height``
pixels tall and the box stays clear of the frame border (a person walking in or out is cut).
Per time slot only the best candidate is kept, so memory grows with a track's duration, not
its frame count. At the end, the track's time is split into ``n`` equal spans and each gives
its best usable crop, scored by sharpness (variance of the Laplacian at a fixed height),
detector confidence and size, each ranked within the track (detectors' scores have no common
scale): one good crop per stretch of the walk rather than ``n`` near-copies of one moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detect import Detection

__all__ = ["Candidate", "CropChooser", "sharpness"]

_SHARP_HEIGHT = 128  # crops are compared for sharpness at this height


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop resized to a fixed height."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    scale = _SHARP_HEIGHT / max(h, 1)
    grey = cv2.resize(grey, (max(1, round(w * scale)), _SHARP_HEIGHT))
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclass(frozen=True)
class Candidate:
    frame: int
    seconds: float
    box: tuple[int, int, int, int]  # x, y, w, h in the frame, clipped
    score: float  # the detector's
    sharpness: float
    usable: bool
    crop: np.ndarray  # BGR pixels

    @property
    def height(self) -> int:
        return self.box[3]


class CropChooser:
    """Collects a track's candidates (``add``) and picks its crops (``choose``)."""

    def __init__(self, *, min_height: int = 80, border: int = 4, slot_seconds: float = 0.5) -> None:
        self.min_height = min_height
        self.border = border
        self.slot_seconds = slot_seconds
        self.slots: dict[int, Candidate] = {}

    def add(self, frame: int, seconds: float, image: np.ndarray, det: Detection) -> None:
        height, width = image.shape[:2]
        x1, y1 = max(0, round(det.x)), max(0, round(det.y))
        x2, y2 = min(width, round(det.x + det.w)), min(height, round(det.y + det.h))
        if x2 - x1 < 8 or y2 - y1 < 16:
            return
        b = self.border
        inside = det.x >= b and det.y >= b and det.x + det.w <= width - b
        inside = inside and det.y + det.h <= height - b
        usable = inside and (y2 - y1) >= self.min_height
        crop = image[y1:y2, x1:x2].copy()
        cand = Candidate(
            frame, seconds, (x1, y1, x2 - x1, y2 - y1), det.score, sharpness(crop), usable, crop
        )
        slot = int(seconds // self.slot_seconds)
        held = self.slots.get(slot)
        if held is None or _better(cand, held):
            self.slots[slot] = cand

    def choose(self, n: int) -> list[Candidate]:
        """Up to ``n`` usable crops in time order; empty when the track has none."""
        usable = [c for c in self.slots.values() if c.usable]
        if not usable or n < 1:
            return []
        quality = _quality(usable)
        usable_sorted = sorted(range(len(usable)), key=lambda i: usable[i].seconds)
        t0, t1 = usable[usable_sorted[0]].seconds, usable[usable_sorted[-1]].seconds
        span = max(t1 - t0, 1e-9)
        chosen: set[int] = set()
        for part in range(n):
            lo, hi = t0 + span * part / n, t0 + span * (part + 1) / n
            inside = [
                i
                for i in usable_sorted
                if i not in chosen and lo <= usable[i].seconds <= hi + (part == n - 1) * 1e-9
            ]
            if inside:
                chosen.add(max(inside, key=lambda i: quality[i]))
        # fewer spans held a crop than wanted: the best of the rest
        for i in sorted(range(len(usable)), key=lambda i: -quality[i]):
            if len(chosen) >= n:
                break
            chosen.add(i)
        return sorted((usable[i] for i in chosen), key=lambda c: c.seconds)


def _better(a: Candidate, b: Candidate) -> bool:
    """Within one time slot: usable first, then sharper times taller."""
    if a.usable != b.usable:
        return a.usable
    return a.sharpness * a.height > b.sharpness * b.height


def _ranks(values: list[float]) -> np.ndarray:
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order / max(len(values) - 1, 1)


def _quality(cands: list[Candidate]) -> np.ndarray:
    return (
        _ranks([c.sharpness for c in cands])
        + _ranks([c.score for c in cands])
        + _ranks([float(c.height) for c in cands])
    )
