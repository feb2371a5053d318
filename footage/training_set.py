"""Footage to a training set: each track's crops in the folder layout ``sona train`` reads.

A site has no identity labels for its cameras, but it has tracks: the crops of one track are
one person. This writes, for every track, up to ``crops_per_track`` crops spread over its time
(the same choice ``sona footage add`` makes, more of them), named Market-style with the track
as the identity::

    DIR/0001/0001_c1s1_000123_00.jpg     track 0001, camera 1, frame 123
    DIR/tracks.json                      each track's camera, time span and crops

``DIR`` loads as a ``custom`` dataset (a folder per identity, camera in the file name), and
``tracks.json`` carries what training from tracks needs beyond that: when each crop was seen,
so that tracks seen at the same time by one camera are known to be different people. Several
cameras go into one folder by exporting each with its own ``--camera``; track numbers run on.
``tracks.json`` is written last and atomically: it alone says which crops belong to the set.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2

from .choose import Candidate, CropChooser
from .collect import TrackCollector
from .decode import Source
from .detect import Detector
from .errors import FootageError
from .track import Track

__all__ = [
    "TRACKS_FILE",
    "ExportReport",
    "ExportSettings",
    "TrainingSetWriter",
    "export_training_set",
    "read_tracks_file",
]

TRACKS_FILE = "tracks.json"
FORMAT = "sona-tracks"
VERSION = 1


@dataclass(frozen=True)
class ExportSettings:
    camera: str
    start: datetime | None = None  # time of the first frame, with its UTC offset
    crops_per_track: int = 16
    min_height: int = 80
    min_hits: int = 3
    max_gap_seconds: float = 1.0
    iou: float = 0.3
    min_motion: float = 0.5
    jpeg_quality: int = 95
    detect_every: int = 1  # frames; the tracker carries people across the others
    motion_gate: bool = False  # detect only where the picture moved (``Finder``)
    sweep_every: int = 0


@dataclass
class ExportReport:
    frames: int = 0
    tracks: int = 0  # confirmed
    written: int = 0  # tracks written
    crops: int = 0
    static: int = 0
    unusable: int = 0
    camera_number: int = 0

    def summary(self) -> str:
        return (
            f"{self.tracks} tracks in {self.frames} frames: {self.written} written with "
            f"{self.crops} crops (camera c{self.camera_number}), {self.unusable} without a "
            f"usable crop, {self.static} that never moved"
        )


def read_tracks_file(folder: Path) -> dict[str, Any]:
    """The folder's ``tracks.json``, checked for its format marker; empty when absent."""
    path = folder / TRACKS_FILE
    if not path.is_file():
        return {"format": FORMAT, "version": VERSION, "cameras": {}, "tracks": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FootageError(f"{path}: not a readable tracks file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FootageError(f"{path}: not a training-set tracks file (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise FootageError(f"{path}: tracks file version {data.get('version')!r} not supported")
    return data


def _atomic_json(data: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TrainingSetWriter:
    """Tracks into a training-set folder as they end (``add``); ``close`` adds the camera to
    its ``tracks.json``. ``export_training_set`` drives one over a camera's clips, and ``sona
    footage add --training-set`` hands it each track it indexed."""

    def __init__(self, out: Path, settings: ExportSettings) -> None:
        if out.exists() and not out.is_dir():
            raise FootageError(f"{out}: not a folder")
        data = read_tracks_file(out)
        if any(c["name"] == settings.camera for c in data["cameras"].values()):
            raise FootageError(
                f"camera {settings.camera!r} is already in {out / TRACKS_FILE}: export it into "
                "another folder, or give this footage another --camera"
            )
        self.out = out
        self.s = settings
        self.data = data
        self.cam = 1 + max((int(c) for c in data["cameras"]), default=0)
        self.next_track = 1 + max((int(t) for t in data["tracks"]), default=0)
        self.report = ExportReport(camera_number=self.cam)

    def add(self, track: Track, chooser: CropChooser | None, offset: float, fps: float) -> None:
        """Write ``track``'s crops (``offset``: seconds from the camera's first frame to its
        clip's), unless it never moved or has no usable crop."""
        if track.still(self.s.min_motion, fps):
            self.report.static += 1
            return
        chosen: list[Candidate] = chooser.choose(self.s.crops_per_track) if chooser else []
        if not chosen:
            self.report.unusable += 1
            return
        number = self.next_track
        self.next_track += 1
        name = f"{number:04d}"
        folder = self.out / name
        folder.mkdir(parents=True, exist_ok=True)
        crops = []
        for n, c in enumerate(chosen):
            frame = c.frame + round(offset * fps)  # numbered over the camera's clips
            file = f"{name}_c{self.cam}s1_{frame:06d}_{n:02d}.jpg"
            ok, data = cv2.imencode(".jpg", c.crop, [cv2.IMWRITE_JPEG_QUALITY, self.s.jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR array
                raise FootageError("a crop could not be encoded as JPEG")
            (folder / file).write_bytes(data.tobytes())
            crops.append(
                {
                    "file": f"{name}/{file}",
                    "frame": frame,
                    "seconds": round(offset + c.seconds, 3),
                    "box": list(c.box),
                }
            )
        self.data["tracks"][name] = {
            "camera": self.cam,
            "first": crops[0]["seconds"],
            "last": crops[-1]["seconds"],
            "seen_first": round(offset + track.first_frame / fps, 3),
            "seen_last": round(offset + track.last_frame / fps, 3),
            "crops": crops,
        }
        self.report.written += 1
        self.report.crops += len(crops)

    def clip(self, source: Source, detector: Detector, offset: float, bar) -> None:
        collector = TrackCollector(detector, self.s, source.fps)
        every = self.s.detect_every
        for frame in source.sample(every):
            _, ended, _ = collector.step(frame, collector.finder.find(frame.index, frame.image))
            for track in ended:
                self.add(track, collector.choosers.pop(track.key, None), offset, source.fps)
            step = min(every, source.frames - frame.index)  # the frames skipped count as read
            self.report.frames += step
            bar.update(step)
        for track in collector.tracker.finish():
            self.add(track, collector.choosers.pop(track.key, None), offset, source.fps)
        self.report.tracks += collector.tracker.confirmed

    def close(self, sources: Sequence[Source], detector: Detector) -> ExportReport:
        """Add the camera of ``sources`` to ``tracks.json`` (atomically: it alone says which
        crops belong to the set); a camera without a track written is refused."""
        report, s = self.report, self.s
        if report.written == 0:
            raise FootageError(
                f"{report.tracks} people tracked in {report.frames} frames but none had a crop "
                f"at least {s.min_height} pixels tall and clear of the frame border "
                f"({report.static} never moved): nothing written"
            )
        seconds = sum(source.duration for source in sources)
        self.data["cameras"][str(self.cam)] = {
            "name": s.camera,
            "sources": [source.name for source in sources],
            "fps": sources[0].fps,
            "seconds": round(seconds, 3),
            "start": s.start.isoformat() if s.start else None,
            "end": (s.start + timedelta(seconds=seconds)).isoformat() if s.start else None,
            "detector": detector.describe(),
            "crops_per_track": s.crops_per_track,
        }
        _atomic_json(self.data, self.out / TRACKS_FILE)
        return report


def export_training_set(
    sources: Sequence[Source],
    detector: Detector,
    settings: ExportSettings,
    out: Path,
    *,
    progress: bool = True,
) -> ExportReport:
    """Track the people of one camera's clips (consecutive) and write each track's crops into
    ``out``, adding the camera to ``out``'s ``tracks.json``. Raises ``FootageError`` for bad
    input (a camera already exported there, no usable track) and leaves ``tracks.json`` as it
    was."""
    from tqdm import tqdm

    writer = TrainingSetWriter(out, settings)
    for source in sources:
        detector.check(source.frames, source.width, source.height, source.name)
    total = sum(s.frames for s in sources)
    offset = 0.0
    with tqdm(total=total, unit="frame", disable=not progress, desc=settings.camera) as bar:
        for source in sources:
            writer.clip(source, detector, offset, bar)
            offset += source.duration
    return writer.close(sources, detector)
