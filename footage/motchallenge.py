"""MOTChallenge ``det.txt``: detections a site already has, one per line,
``frame, id, left, top, width, height, confidence[, x, y, z]`` (frames from 1, pixels), as
the MOT16/17/20 benchmarks publish them. Every line is checked; the first bad one is named."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .detect import Detection, Detector
from .errors import FootageError

__all__ = ["FileDetector", "check_against", "read_det"]

_MAX_BYTES = 512 * 1024 * 1024


def read_det(path: Path) -> dict[int, list[Detection]]:
    """Detections by 0-based frame index."""
    if not path.is_file():
        raise FootageError(f"{path}: no such detections file")
    if path.stat().st_size > _MAX_BYTES:
        raise FootageError(f"{path}: larger than {_MAX_BYTES >> 20} MiB")
    out: dict[int, list[Detection]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FootageError(f"{path}: not a text file (MOTChallenge det.txt expected)") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        where = f"{path}:{number}"
        if len(fields) < 7:
            raise FootageError(
                f"{where}: {len(fields)} fields; det.txt lines are frame,id,left,top,width,"
                "height,confidence[,x,y,z]"
            )
        try:
            values = [float(f) for f in fields[:7]]
        except ValueError:
            raise FootageError(f"{where}: a field is not a number: {line.strip()[:80]}") from None
        frame, _, left, top, width, height, score = values
        if not all(math.isfinite(v) for v in values):
            raise FootageError(f"{where}: a field is not a finite number")
        if frame != int(frame) or frame < 1:
            raise FootageError(f"{where}: frame {fields[0]} is not a whole number >= 1")
        if width <= 0 or height <= 0:
            raise FootageError(f"{where}: the box has width {width:g} and height {height:g}")
        out.setdefault(int(frame) - 1, []).append(Detection(left, top, width, height, score))
    if not out:
        raise FootageError(f"{path}: no detections in it")
    return out


def check_against(
    detections: dict[int, list[Detection]], frames: int, width: int, height: int, name: str
) -> None:
    """Refuse detections of another video: frames past its end, boxes outside its picture."""
    last = max(detections) + 1
    if last > frames:
        raise FootageError(
            f"det.txt names frame {last} but {name} has {frames} frames: "
            "not this video's detections"
        )
    for index, boxes in sorted(detections.items()):
        for d in boxes:
            if d.x >= width or d.y >= height or d.x + d.w <= 0 or d.y + d.h <= 0:
                raise FootageError(
                    f"det.txt frame {index + 1}: box ({d.x:g}, {d.y:g}, {d.w:g}, {d.h:g}) lies "
                    f"outside the {width}x{height} picture of {name}: not this video's detections"
                )


class FileDetector(Detector):
    """Detections from a MOTChallenge ``det.txt``."""

    name = "det.txt"

    def __init__(self, path: Path, min_score: float | None = None) -> None:
        self.path = path
        self.by_frame = read_det(path)
        if min_score is not None:
            self.by_frame = {
                f: [d for d in ds if d.score >= min_score] for f, ds in self.by_frame.items()
            }
        self.min_score = min_score

    def describe(self) -> str:
        stat = self.path.stat()
        return f"det.txt {self.path.resolve()} {stat.st_size}:{stat.st_mtime_ns} {self.min_score}"

    def check(self, frames: int, width: int, height: int, name: str) -> None:
        check_against(self.by_frame, frames, width, height, name)

    def detect(self, index: int, image: np.ndarray) -> list[Detection]:
        return list(self.by_frame.get(index, ()))
