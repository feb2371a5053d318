"""People found, tracked and their crop candidates gathered, frame by frame: what indexing a
camera (``ingest.Pipeline``) and writing its training set (``training_set``) both do, so that
a track means the same in a gallery and in a training set."""

from __future__ import annotations

from typing import Protocol

from .choose import CropChooser
from .decode import Frame
from .detect import Detection, Detector
from .finder import Finder
from .track import Track, Tracker

__all__ = ["TrackCollector", "TrackingSettings"]


class TrackingSettings(Protocol):
    """The settings both ``ingest.Settings`` and ``training_set.ExportSettings`` carry."""

    @property
    def iou(self) -> float: ...
    @property
    def max_gap_seconds(self) -> float: ...
    @property
    def min_hits(self) -> int: ...
    @property
    def min_height(self) -> int: ...
    @property
    def motion_gate(self) -> bool: ...
    @property
    def sweep_every(self) -> int: ...


class TrackCollector:
    """One clip's (or one connection's) tracker, where it looks for people, and a crop
    chooser per track still open; nobody is carried over to another clip."""

    def __init__(self, detector: Detector, settings: TrackingSettings, fps: float) -> None:
        self.tracker = Tracker(
            iou_threshold=settings.iou,
            max_age=max(1, round(settings.max_gap_seconds * fps)),
            min_hits=settings.min_hits,
            high_score=detector.high_score,
        )
        self.finder = Finder(
            detector, motion_gate=settings.motion_gate, sweep_every=settings.sweep_every
        )
        self.min_height = settings.min_height
        self.choosers: dict[int, CropChooser] = {}

    def step(
        self, frame: Frame, detections: list[Detection]
    ) -> tuple[list[tuple[Track, Detection]], list[Track], list[int]]:
        """Track one frame's detections and collect their crop candidates; the (track,
        detection) pairs of this frame, the tracks that ended (their choosers kept until the
        caller pops them) and the keys of tracks that died unconfirmed (choosers dropped)."""
        pairs, ended = self.tracker.update(frame.index, detections)
        for track, det in pairs:
            chooser = self.choosers.get(track.key)
            if chooser is None:
                chooser = self.choosers[track.key] = CropChooser(min_height=self.min_height)
            chooser.add(frame.index, frame.seconds, frame.image, det)
        live = {t.key for t in self.tracker.live} | {t.key for t in ended}
        dropped = [k for k in self.choosers if k not in live]
        for k in dropped:
            del self.choosers[k]
        return pairs, ended, dropped
