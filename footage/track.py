"""People followed across frames: IoU association with a constant-velocity motion model, in
the spirit of SORT (Bewley et al., 2016) and ByteTrack (Zhang et al., 2022).

Each frame, every live track's box is moved by its velocity; confident detections are matched
to those predictions first, then the remaining weak ones to the tracks still unmatched
(ByteTrack's second round, which keeps people through partial occlusion), greedily by IoU.
Only a confident unmatched detection starts a track; a track counts once it was seen in
``min_hits`` frames and ends after ``max_age`` frames unseen.

Why not a library: the maintained implementations (Roboflow's ``supervision``, ``boxmot``)
pull in ``opencv-python`` beside the headless build this project uses (two packages writing
one ``cv2``) or a model zoo, for what is a hundred lines here. Greedy matching instead of the
Hungarian algorithm: with the few people of one camera's frame it almost always gives the same
pairs, and needs no SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detect import Detection

__all__ = ["Track", "Tracker", "iou_matrix"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4] (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass(eq=False)
class Track:
    """One person's boxes over time. ``number``: set when the track is confirmed, in order."""

    key: int  # creation order, internal
    box: np.ndarray  # last seen (x1, y1, x2, y2)
    last_frame: int
    first_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    number: int | None = None
    low: np.ndarray | None = None  # the box centre's smallest x, y so far
    high: np.ndarray | None = None
    height_sum: float = 0.0

    def __post_init__(self) -> None:
        centre = (self.box[:2] + self.box[2:]) / 2
        self.low, self.high = centre.copy(), centre.copy()
        self.height_sum = float(self.box[3] - self.box[1])

    def still(self, min_motion: float, fps: float) -> bool:
        """Whether the track moved less than ``min_motion`` heights, pro rata for tracks
        shorter than two seconds (a walker covers about half their height a second)."""
        seconds = (self.last_frame - self.first_frame) / fps
        return self.moved < min_motion * min(1.0, seconds / 2.0)

    @property
    def moved(self) -> float:
        """How far the person went, in their own heights (the span of the box centre): a
        detector's false alarm on a parked van or a pole stays put, a walker does not."""
        span = float(np.linalg.norm(self.high - self.low))
        return span / max(self.height_sum / self.hits, 1.0)

    def predicted(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.last_frame)

    def update(self, frame: int, box: np.ndarray) -> None:
        gap = max(1, frame - self.last_frame)
        step = (box - self.box) / gap
        # smoothed: a detector's boxes jitter by a few pixels from frame to frame
        self.velocity = step if self.hits == 1 else 0.6 * self.velocity + 0.4 * step
        self.box = box
        self.last_frame = frame
        self.hits += 1
        centre = (box[:2] + box[2:]) / 2
        self.low = np.minimum(self.low, centre)
        self.high = np.maximum(self.high, centre)
        self.height_sum += float(box[3] - box[1])


def _greedy(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape))[0]
    used_r, used_c = set(), set()
    for r, c in order:
        if iou[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((int(r), int(c)))
    return pairs


class Tracker:
    """``update`` once per frame, in order; ``finish`` at the end of the clip."""

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        max_age: int = 10,
        min_hits: int = 3,
        high_score: float | None = None,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self.min_hits = min_hits
        self.high_score = high_score
        self.live: list[Track] = []
        self._keys = 0
        self.confirmed = 0

    def update(
        self, frame: int, detections: list[Detection]
    ) -> tuple[list[tuple[Track, Detection]], list[Track]]:
        """Returns the (track, detection) pairs of this frame, for confirmed and unconfirmed
        tracks alike, and the confirmed tracks that ended (unseen for ``max_age`` frames)."""
        boxes = np.array([d.corners for d in detections], dtype=np.float64).reshape(-1, 4)
        if self.high_score is None:
            strong = list(range(len(detections)))
        else:
            strong = [i for i, d in enumerate(detections) if d.score >= self.high_score]
        weak = [i for i in range(len(detections)) if i not in set(strong)]
        pending = list(range(len(self.live)))
        pairs: list[tuple[Track, Detection]] = []
        unmatched_strong = list(strong)
        for group in (strong, weak):
            if not group or not pending:
                if group is strong:
                    continue
                break
            predicted = np.array([self.live[t].predicted(frame) for t in pending])
            matched = _greedy(iou_matrix(predicted, boxes[group]), self.iou_threshold)
            taken = set()
            for r, c in matched:
                track, det = self.live[pending[r]], group[c]
                track.update(frame, boxes[det])
                if track.number is None and track.hits >= self.min_hits:
                    self.confirmed += 1
                    track.number = self.confirmed
                pairs.append((track, detections[det]))
                taken.add(pending[r])
                if group is strong:
                    unmatched_strong.remove(det)
            pending = [t for t in pending if t not in taken]
        for det in unmatched_strong:
            self._keys += 1
            track = Track(self._keys, boxes[det], frame, frame)
            if self.min_hits <= 1:
                self.confirmed += 1
                track.number = self.confirmed
            self.live.append(track)
            pairs.append((track, detections[det]))
        ended = [t for t in self.live if frame - t.last_frame > self.max_age]
        self.live = [t for t in self.live if frame - t.last_frame <= self.max_age]
        return pairs, [t for t in ended if t.number is not None]

    def finish(self) -> list[Track]:
        """The confirmed tracks still live at the end of the clip."""
        done = [t for t in self.live if t.number is not None]
        self.live = []
        return done
