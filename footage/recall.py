"""How many of the people a slow, thorough run finds a faster run still indexes.

A reference track is one a run indexes (confirmed, moving, with a usable crop), kept with every
box the tracker gave it. Another run finds it when one of its indexed crops overlaps the
reference's box (IoU >= 0.5) at the crop's frame, or at the nearest frame of the reference
track when the reference's detector missed that one, within the track's frames. The benchmark
(``bench/footage_speed.py``) and the suite score the motion-gated default against the
exhaustive search with it.
"""

from __future__ import annotations

import statistics

from .choose import CropChooser
from .decode import Source
from .detect import Detector
from .finder import Finder
from .track import Tracker

__all__ = ["Box", "clip_box", "iou", "people_only", "recall", "reference_tracks", "track_found"]

Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels


def clip_box(box: Box, width: int, height: int) -> Box:
    x1, y1 = max(0.0, box[0]), max(0.0, box[1])
    x2, y2 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    return x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def track_found(reference: dict[int, Box], crops: list[tuple[int, Box]]) -> bool:
    """Whether one crop (frame, box) overlaps the reference track (IoU >= 0.5) within its
    frames, at its frame or the nearest one the reference holds."""
    frames = sorted(reference)
    for frame, box in crops:
        if frames[0] <= frame <= frames[-1]:
            nearest = min(frames, key=lambda f: abs(f - frame))
            if iou(box, reference[nearest]) >= 0.5:
                return True
    return False


def recall(reference: list[dict[int, Box]], crops: list[tuple[int, Box]]) -> tuple[int, int]:
    """(reference tracks found, reference tracks)."""
    return sum(track_found(r, crops) for r in reference), len(reference)


def people_only(reference: list[dict[int, Box]]) -> list[dict[int, Box]]:
    """The reference tracks of person height: those whose median box is at most 1.5 times the
    median over all tracks. On vtest.avi the taller ones are HOG's windows round groups of
    people and round structures, not people."""
    if not reference:
        return []
    heights = [statistics.median(b[3] for b in r.values()) for r in reference]
    bound = 1.5 * statistics.median(heights)
    return [r for r, h in zip(reference, heights, strict=True) if h <= bound]


def reference_tracks(
    source: Source,
    detector: Detector,
    *,
    min_motion: float = 0.5,
    crops_per_track: int = 4,
) -> list[dict[int, Box]]:
    """The tracks that ``detector``, searching every frame whole, would have indexed (as the
    pipeline's defaults choose them), each with all its boxes by frame."""
    tracker = Tracker(max_age=round(source.fps), high_score=detector.high_score)
    finder = Finder(detector, motion_gate=False)
    choosers: dict[int, CropChooser] = {}
    boxes: dict[int, dict[int, Box]] = {}
    out: list[dict[int, Box]] = []

    def finish(track) -> None:
        chooser, held = choosers.pop(track.key, None), boxes.pop(track.key, {})
        if chooser is None or track.still(min_motion, source.fps):
            return
        if chooser.choose(crops_per_track):
            out.append(held)

    for frame in source.sample(1):
        pairs, ended = tracker.update(frame.index, finder.find(frame.index, frame.image))
        for track, det in pairs:
            choosers.setdefault(track.key, CropChooser()).add(
                frame.index, frame.seconds, frame.image, det
            )
            box = clip_box((det.x, det.y, det.w, det.h), source.width, source.height)
            boxes.setdefault(track.key, {})[frame.index] = box
        for track in ended:
            finish(track)
        live = {t.key for t in tracker.live}
        for key in [k for k in choosers if k not in live]:
            del choosers[key]
            boxes.pop(key, None)
    for track in tracker.finish():
        finish(track)
    return out
