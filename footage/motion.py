"""Where a fixed camera's picture moved: the regions worth a detector's time.

Surveillance cameras do not move, so background subtraction (OpenCV's MOG2, Zivkovic 2004)
says where people can be: a walker changes pixels, a wall does not. It runs on a reduced
copy of the frame (a person is still tens of pixels tall there) and costs a few
milliseconds, where a detector run over the whole frame costs a hundred or more. Blobs of
motion are grown into detector-sized windows with a margin (a moving arm must bring its whole
person), overlapping windows merged, and handed to the detector instead of the frame.

A person standing still is absorbed into the background after ``history`` frames; by then
their track has its crops, and the tracker keeps it alive across short gaps.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MotionGate", "merge_boxes"]

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes replaced by their union until none overlap (so no person is split
    between two windows and no pixel is searched twice)."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for box in boxes:
            for i, held in enumerate(out):
                if _overlap(box, held):
                    x1, y1 = min(box[0], held[0]), min(box[1], held[1])
                    x2 = max(box[0] + box[2], held[0] + held[2])
                    y2 = max(box[1] + box[3], held[1] + held[3])
                    out[i] = (x1, y1, x2 - x1, y2 - y1)
                    merged = True
                    break
            else:
                out.append(box)
        boxes = out
    return boxes


class MotionGate:
    """``regions(image)``: the windows of this frame that moved, in frame pixels.

    ``scale``: the frame is reduced this much for background subtraction; ``min_area``: the
    smallest blob (in frame pixels) that counts, below it is noise or leaves; ``margin``: how
    much of a window's height is added round a blob; ``min_size``: the smallest window, so
    that the detector's own window (HOG's is 64x128 before upscaling) fits a person in it.
    """

    def __init__(
        self,
        *,
        scale: float = 0.5,
        history: int = 200,
        min_area: int = 120,
        margin: float = 0.35,
        min_size: tuple[int, int] = (96, 176),
    ) -> None:
        self.scale = scale
        self.min_area = min_area
        self.margin = margin
        self.min_size = min_size
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=16, detectShadows=True
        )
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self.frames = 0

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Foreground (255) at the reduced scale; shadows (MOG2 marks them 127) left out."""
        small = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        fg = self._mog.apply(small)
        self.frames += 1
        _, fg = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        return cv2.dilate(fg, self._kernel, iterations=2)

    def regions(self, image: np.ndarray) -> list[Box]:
        height, width = image.shape[:2]
        fg = self.mask(image)
        if self.frames == 1:  # the model has seen nothing yet: everything is "new"
            return [(0, 0, width, height)]
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        s = 1.0 / self.scale
        boxes: list[Box] = []
        min_w, min_h = self.min_size
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            x, y, w, h = x * s, y * s, w * s, h * s
            if w * h < self.min_area:
                continue
            pad = self.margin * max(h, min_h * 0.5)
            cx, cy = x + w / 2, y + h / 2
            w2, h2 = max(w + 2 * pad, min_w) / 2, max(h + 2 * pad, min_h) / 2
            x1, y1 = max(0, int(cx - w2)), max(0, int(cy - h2))
            x2, y2 = min(width, int(np.ceil(cx + w2))), min(height, int(np.ceil(cy + h2)))
            if x2 > x1 and y2 > y1:
                boxes.append((x1, y1, x2 - x1, y2 - y1))
        return merge_boxes(boxes)
