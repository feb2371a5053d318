"""Footage made for the tests: videos of two textured 'people' walking across a textured
scene, their true boxes as a MOTChallenge det.txt, and the real vtest.avi where installed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

#: Debian's opencv-doc: 795 frames at 10 fps, 768x576, people walking past a camera.
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
needs_vtest = pytest.mark.skipif(
    not VTEST.is_file(),
    reason="vtest.avi absent: apt-get install opencv-doc (make test does in CI)",
)
WIDTH, HEIGHT, FPS = 320, 240, 10.0


def people_boxes(frame: int) -> list[tuple[int, int, int, int]]:
    """Two people 110 pixels tall, one walking right, one left, never overlapping."""
    return [(20 + 6 * frame, 20, 44, 110), (250 - 5 * frame, 115, 40, 110)]


def scene(frame: int, blank: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1000)  # the same background every frame
    image = rng.integers(90, 120, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if blank:
        return np.full((HEIGHT, WIDTH, 3), 100, np.uint8)
    for n, (x, y, w, h) in enumerate(people_boxes(frame)):
        person = np.random.default_rng(n).integers(0, 256, (h // 10, w // 4, 3), dtype=np.uint8)
        image[y : y + h, x : x + w] = cv2.resize(person, (w, h), interpolation=cv2.INTER_NEAREST)
    return image


def write_video(path: Path, frames: int = 30, blank: bool = False) -> Path:
    """An MJPEG AVI (OpenCV's FFmpeg writes and reads it everywhere)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(scene(i, blank))
    writer.release()
    return path


def write_det(path: Path, frames: int = 30, shift: int = 0) -> Path:
    """The true boxes, MOTChallenge style (frames from 1), frame numbers moved by ``shift``."""
    lines = [
        f"{i + 1 + shift},-1,{x},{y},{w},{h},{0.9 - 0.1 * n:.2f},-1,-1,-1"
        for i in range(frames)
        for n, (x, y, w, h) in enumerate(people_boxes(i))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
