"""Where to look for people in a frame, and how hard: the detector on the whole frame, or only
on the regions that moved (``MotionGate``), plus now and then a coarse sweep of the whole
frame for tall boxes. One object per clip or connection, so the indexing pipeline and the
training-set export look for people the same way."""

from __future__ import annotations

import numpy as np

from .detect import Detection, Detector
from .motion import MotionGate

__all__ = ["Finder"]


class Finder:
    """``find(index, image)``: the people of one frame.

    ``motion_gate``: search only where the picture moved (fixed cameras); ``sweep_every``:
    with the gate, every n-th searched frame also gets the detector's coarse whole-frame sweep
    (0: never), which finds the tall boxes (groups, people near the camera) that the moving
    regions' windows are too small for."""

    def __init__(self, detector: Detector, *, motion_gate: bool, sweep_every: int = 0) -> None:
        self.detector = detector
        self.gate = MotionGate() if motion_gate else None
        self.sweep_every = sweep_every
        self.searched = 0

    def find(self, index: int, image: np.ndarray) -> list[Detection]:
        if self.gate is None:
            return self.detector.detect(index, image)
        regions = self.gate.regions(image)
        found = self.detector.detect_in(index, image, regions)
        if self.sweep_every and self.searched % self.sweep_every == 0:
            found = self.detector.sweep(index, image, found)
        self.searched += 1
        return found

    def find_many(self, frames: list[tuple[int, np.ndarray]]) -> list[list[Detection]]:
        """``find`` of consecutive frames (index, image), in one pass of a detector that
        takes batches (which then looks at every frame that moved, whole)."""
        if self.detector.batch <= 1:
            return [self.find(index, image) for index, image in frames]
        if self.gate is None:
            return self.detector.detect_many(frames)
        moved = [bool(self.gate.regions(image)) for _, image in frames]
        found = iter(
            self.detector.detect_many([f for f, m in zip(frames, moved, strict=True) if m])
        )
        return [next(found) if m else [] for m in moved]
