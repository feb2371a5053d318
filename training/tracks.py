"""A site's tracks as training and test data: the folder ``sona footage export-training``
writes (a folder of crops per track and ``tracks.json``), read with each crop's time.

Tracks stand in for identities: the crops of one track are one person, and two tracks one
camera saw at the same time are two people (``cannot_link``). ``time_split`` cuts a set at a
moment, so that a model adapted on one side is scored on tracks it never saw; a track that
runs across the moment belongs to neither side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .datasets import ImageRecord, ReIDDataset

__all__ = [
    "TRACKS_FILE",
    "Track",
    "TrackCrop",
    "TrackSet",
    "TrackSetError",
    "cannot_link",
    "load_tracks",
    "time_split",
    "to_dataset",
]

TRACKS_FILE = "tracks.json"


class TrackSetError(ValueError):
    """A training-set folder that cannot be used as tracks; the message says why."""


@dataclass(frozen=True)
class TrackCrop:
    path: Path
    seconds: float  # on the set's clock (see ``TrackSet``)


@dataclass(frozen=True)
class Track:
    name: str
    camera: int  # 1-based, as in the file names
    start: float  # first and last time the tracker saw the person, on the set's clock
    end: float
    crops: tuple[TrackCrop, ...]

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class TrackSet:
    """Times are seconds since the earliest camera's first frame when every camera has a
    start time, else seconds since each camera's own first frame."""

    root: Path
    tracks: tuple[Track, ...]
    cameras: dict[int, str]

    @property
    def span(self) -> tuple[float, float]:
        return min(t.start for t in self.tracks), max(t.end for t in self.tracks)


def load_tracks(root: str | Path) -> TrackSet:
    """The tracks of a training-set folder; ``TrackSetError`` when it holds none."""
    root = Path(root)
    path = root / TRACKS_FILE
    if not root.is_dir():
        raise TrackSetError(f"{root}: not a folder")
    if not path.is_file():
        raise TrackSetError(
            f"{root}: no {TRACKS_FILE}, so no tracks (write one with sona footage export-training)"
        )
    try:
        data = json.loads(path.read_text())
        cameras = data["cameras"]
        raw = data["tracks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrackSetError(f"{path}: not a readable tracks file ({exc})") from None
    starts = {int(k): c.get("start") for k, c in cameras.items()}
    base: dict[int, float] = dict.fromkeys(starts, 0.0)
    if starts and all(starts.values()):
        epoch = {k: datetime.fromisoformat(v).timestamp() for k, v in starts.items()}
        first = min(epoch.values())
        base = {k: v - first for k, v in epoch.items()}
    tracks = []
    missing = []
    try:
        for name, t in sorted(raw.items()):
            camera = int(t["camera"])
            shift = base.get(camera, 0.0)
            crops = tuple(
                TrackCrop(root / c["file"], float(c["seconds"]) + shift) for c in t["crops"]
            )
            missing += [c.path for c in crops if not c.path.is_file()]
            if crops:
                start = float(t.get("seen_first", t["first"])) + shift
                end = float(t.get("seen_last", t["last"])) + shift
                tracks.append(Track(name, camera, start, end, crops))
    except (KeyError, TypeError, ValueError) as exc:
        raise TrackSetError(f"{path}: a track without {exc}") from None
    if missing:
        raise TrackSetError(f"{path}: {len(missing)} crops listed are missing, e.g. {missing[0]}")
    if not tracks:
        raise TrackSetError(f"{root}: {TRACKS_FILE} lists no tracks")
    return TrackSet(root, tuple(tracks), {int(k): c["name"] for k, c in cameras.items()})


def time_split(tracks: TrackSet, at: float | None = None) -> tuple[list[Track], list[Track], int]:
    """Tracks ended before ``at`` seconds, tracks started at or after it, and how many ran
    across it (in neither). ``at`` defaults to the middle of the set's time span."""
    if at is None:
        lo, hi = tracks.span
        at = (lo + hi) / 2
    earlier = [t for t in tracks.tracks if t.end < at]
    later = [t for t in tracks.tracks if t.start >= at]
    return earlier, later, len(tracks.tracks) - len(earlier) - len(later)


def cannot_link(tracks: list[Track]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of tracks one camera saw at the same time: two different people."""
    pairs = set()
    for i, a in enumerate(tracks):
        for j in range(i + 1, len(tracks)):
            b = tracks[j]
            if a.camera == b.camera and a.start <= b.end and b.start <= a.end:
                pairs.add((i, j))
    return pairs


def to_dataset(
    tracks: list[Track], labels: list[int] | None = None, name: str = "tracks"
) -> ReIDDataset:
    """A training set of the tracks' crops: identity ``labels[i]`` for track i (by default
    each track its own), numbered 0..n-1 in order of first appearance."""
    labels = list(range(len(tracks))) if labels is None else labels
    order: dict[int, int] = {}
    records = []
    for track, label in zip(tracks, labels, strict=True):
        pid = order.setdefault(label, len(order))
        records += [ImageRecord(c.path, pid, track.camera - 1) for c in track.crops]
    root = tracks[0].crops[0].path.parent.parent if tracks else Path(".")
    return ReIDDataset(name=name, root=root, train=records)
