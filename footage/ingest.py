"""The footage pipeline: clips -> frames -> people -> tracks -> chosen crops -> ``POST /gallery``.

Everything that can be checked before indexing is (every clip decoded once, det.txt against
the clips, the service answering), so bad input changes nothing. Tracks are sent as they end,
one request each, and written down in the run's state (``state``), so an interrupted run
started again skips what it sent. A failure part way says what was indexed before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import cv2

from .choose import Candidate, CropChooser
from .collect import TrackCollector
from .decode import Frame, Source, prefetch
from .detect import Detection, Detector
from .errors import FootageError
from .state import RunState
from .track import Track
from .upload import TrackUploader

__all__ = ["Pipeline", "Report", "Settings", "ingest", "track_id"]


@dataclass(frozen=True)
class Settings:
    camera: str
    start: datetime  # time of the first frame of the first clip, with its UTC offset
    crops_per_track: int = 4
    min_height: int = 80
    min_hits: int = 3  # frames a track must be seen in to count
    max_gap_seconds: float = 1.0  # a track unseen this long has ended
    iou: float = 0.3
    jpeg_quality: int = 95
    min_motion: float = 0.5  # heights a track must move (pro rata under 2 s; 0: keep all)
    detect_every: int = 2  # frames; the tracker carries people across the others
    motion_gate: bool = True  # detect only where the picture moved (fixed cameras)
    sweep_every: int = 0  # with the gate: every n-th search also sweeps the frame (0: never)

    def describe(self) -> str:
        return (
            f"{self.crops_per_track}/{self.min_height}/{self.min_hits}/{self.max_gap_seconds}/"
            f"{self.iou}/{self.jpeg_quality}/{self.min_motion}/{self.detect_every}/"
            f"{int(self.motion_gate)}" + (f"/sweep{self.sweep_every}" if self.sweep_every else "")
        )


@dataclass
class Report:
    clips: int = 0
    frames: int = 0
    video_seconds: float = 0.0
    detections: int = 0
    tracks: int = 0  # confirmed tracks
    indexed: int = 0  # tracks sent by this run
    crops: int = 0  # crops sent by this run
    skipped: int = 0  # tracks a previous run had indexed
    unusable: int = 0  # tracks without a crop tall enough and clear of the border
    static: int = 0  # tracks that never moved (a detector's false alarm on a still thing)
    wall_s: float = 0.0
    already_complete: bool = False
    items: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.tracks} tracks in {self.frames} frames ({self.video_seconds:.1f} s of video, "
            f"{self.fps:.1f} frames/s): {self.indexed} indexed with {self.crops} crops, "
            f"{self.skipped} already indexed, {self.unusable} without a usable crop, "
            f"{self.static} that never moved"
        )


def track_id(camera: str, start: datetime, key: str, number: int) -> str:
    """Stable across reruns of the same run (same clip, settings, start), distinct otherwise."""
    return f"{camera[:80]}-{start.strftime('%Y%m%dT%H%M%S')}-{key[:6]}-{number:04d}"


def _jpeg(crop, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR array
        raise FootageError("a crop could not be encoded as JPEG")
    return data.tobytes()


class Pipeline:
    """One camera's people -> tracks -> crops -> the service, frame by frame; the files'
    loop (``ingest``) and the live loop (``live.watch``) drive it."""

    def __init__(
        self,
        detector: Detector,
        uploader: TrackUploader,
        settings: Settings,
        state: RunState,
        key: str,
    ) -> None:
        self.detector = detector
        self.uploader = uploader
        self.s = settings
        self.state = state
        self.key = key
        self.report = Report()
        self.number = 0
        self.tracks_before = 0  # confirmed in earlier clips
        self.collector: TrackCollector | None = None
        self.last_seen: dict[int, float] = {}  # track key -> seconds of its latest frame
        # each track indexed, now or by the run this one resumes: (track, its crops'
        # chooser, seconds from the first clip's start to its clip's, frame rate)
        self.on_indexed: Callable[[Track, CropChooser, float, float], None] | None = None

    def restart(self, fps: float) -> None:
        """A new clip or a new connection: nobody is carried over from before."""
        if self.collector is not None:
            self.tracks_before += self.collector.tracker.confirmed
        self.collector = TrackCollector(self.detector, self.s, fps)
        self.last_seen = {}

    @property
    def choosers(self) -> dict[int, CropChooser]:
        """The crop chooser of each track still open (or just ended, until it is sent)."""
        return {} if self.collector is None else self.collector.choosers

    def step(self, frame: Frame, detections: list[Detection] | None = None) -> list[Track]:
        """Detect (unless ``detections`` are given), track and collect crop candidates in one
        frame; the tracks that ended."""
        assert self.collector is not None
        if detections is None:
            detections = self.collector.finder.find(frame.index, frame.image)
        pairs, ended, dropped = self.collector.step(frame, detections)
        for track, _ in pairs:
            self.last_seen[track.key] = frame.seconds
        for k in dropped:  # died unconfirmed
            self.last_seen.pop(k, None)
        self.report.detections += len(detections)
        self.report.tracks = self.tracks_before + self.collector.tracker.confirmed
        return ended

    def finish(self) -> list[Track]:
        """The confirmed tracks still open (end of a clip, a dropped stream, a stop)."""
        return [] if self.collector is None else self.collector.tracker.finish()

    def crops(
        self, chosen: list[Candidate], tid: str, clip_start: datetime, source: str
    ) -> list[tuple[bytes, dict]]:
        return [
            (
                _jpeg(c.crop, self.s.jpeg_quality),
                {
                    "camera_id": self.s.camera,
                    "timestamp": (clip_start + timedelta(seconds=c.seconds)).isoformat(),
                    "track_id": tid,
                    "source": source,
                    "frame": c.frame,
                    "box": list(c.box),
                },
            )
            for c in chosen
        ]

    def send(
        self,
        track: Track,
        chooser: CropChooser | None,
        clip_start: datetime,
        source: Source | str,
        fps: float,
        tid: str,
        entry: str | None = None,
    ) -> bool:
        """Index the track's chosen crops under ``tid`` (``entry``: its name in the state,
        ``tid`` by default); whether anything was sent."""
        entry = entry or tid
        if track.still(self.s.min_motion, fps):
            self.report.static += 1
            return False
        chosen: list[Candidate] = chooser.choose(self.s.crops_per_track) if chooser else []
        if not chosen:
            self.report.unusable += 1
            return False
        if self.on_indexed is not None and chooser is not None:
            self.on_indexed(track, chooser, (clip_start - self.s.start).total_seconds(), fps)
        if entry in self.state.done:
            self.report.skipped += 1
            return False
        if entry in self.state.pending and (held := self.uploader.exists(tid)):
            self.state.mark_done(entry, held)  # sent by the run that stopped, never written down
            self.report.skipped += 1
            return False
        name = source if isinstance(source, str) else source.name
        crops = self.crops(chosen, tid, clip_start, name)
        self.state.mark_pending(entry)
        items = self.uploader.send(tid, crops)
        seen = clip_start + timedelta(seconds=self.last_seen.get(track.key, chosen[-1].seconds))
        now = datetime.now(seen.tzinfo)
        self.state.mark_done(entry, items, last_seen=seen.isoformat(), sent=now.isoformat())
        self.report.items[entry] = items
        self.report.indexed += 1
        self.report.crops += len(items)
        return True

    def flush(
        self, track: Track, chooser: CropChooser | None, clip_start: datetime, source: Source
    ) -> None:
        self.number += 1
        tid = track_id(self.s.camera, self.s.start, self.key, self.number)
        self.send(track, chooser, clip_start, source, source.fps, tid)

    def clip(self, source: Source, clip_start: datetime, bar) -> None:
        self.restart(source.fps)
        every = self.s.detect_every
        for frames in _batches(prefetch(source.sample(every)), self.detector.batch):
            assert self.collector is not None
            found = self.collector.finder.find_many([(f.index, f.image) for f in frames])
            for frame, detections in zip(frames, found, strict=True):
                for track in self.step(frame, detections):
                    self.flush(track, self.choosers.pop(track.key, None), clip_start, source)
                    self.last_seen.pop(track.key, None)
                step = min(every, source.frames - frame.index)  # skipped frames count as read
                self.report.frames += step
                bar.update(step)
            bar.set_postfix(tracks=self.report.tracks, refresh=False)
        for track in self.finish():
            self.flush(track, self.choosers.pop(track.key, None), clip_start, source)


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest(
    sources: Sequence[Source],
    detector: Detector,
    uploader: TrackUploader,
    settings: Settings,
    state: RunState,
    *,
    key: str,
    progress: bool = True,
    position: int | None = None,
    on_indexed: Callable[[Track, CropChooser, float, float], None] | None = None,
) -> Report:
    """Index the clips (consecutive: each starts where the previous ended) into the
    uploader's gallery; ``on_indexed`` sees each track indexed (``Pipeline.on_indexed``).
    Raises ``FootageError`` for bad input, and for a failure part way, saying what was
    indexed before it."""
    from tqdm import tqdm

    for source in sources:
        detector.check(source.frames, source.width, source.height, source.name)
    if state.complete:
        report = Report(clips=len(sources), already_complete=True)
        report.skipped = len(state.done)
        return report
    uploader.check()
    run = Pipeline(detector, uploader, settings, state, key)
    run.on_indexed = on_indexed
    run.report.clips = len(sources)

    started = time.perf_counter()
    offset = 0.0
    total = sum(s.frames for s in sources)
    try:
        with tqdm(
            total=total,
            unit="frame",
            disable=not progress,
            desc=settings.camera,
            position=position,
        ) as bar:
            for source in sources:
                run.clip(source, settings.start + timedelta(seconds=offset), bar)
                offset += source.duration
    except FootageError as exc:
        r = run.report
        if r.indexed:
            raise FootageError(
                f"{exc} (stopped after {r.frames} frames; {r.indexed} tracks with {r.crops} "
                "crops were indexed before this: the same command resumes after them)"
            ) from None
        raise
    finally:
        run.report.wall_s = time.perf_counter() - started
        run.report.video_seconds = offset
    report = run.report
    if report.tracks == 0:
        raise FootageError(
            f"no people found in {', '.join(s.name for s in sources)} "
            f"({report.frames} frames, detector {detector.name}): nothing indexed"
        )
    if report.indexed + report.skipped == 0:
        raise FootageError(
            f"{report.tracks} people tracked but none had a crop at least {settings.min_height} "
            f"pixels tall and clear of the frame border ({report.static} never moved): nothing "
            "indexed (try a lower --min-height, or --min-motion 0)"
        )
    state.mark_complete()
    return report
