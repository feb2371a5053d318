"""A live camera (``rtsp://``, ``http://``, ``udp://`` ...) indexed as it streams, for hours.

Crop times come from the wall clock at the moment each frame is read (a stream seldom says
when it was filmed). A track is sent when the person has left (unseen for
``max_gap_seconds``), and a person who lingers is sent every ``flush_seconds`` under the same
track id, its crop candidates started afresh each time: memory stays bounded however long
the stream runs. When the stream drops, the open tracks are sent, and the stream is opened
again with back-off; the tracker starts afresh (frames are lost in between), the run does not.
A stop (SIGINT, SIGTERM: ``stop`` is set) sends the open tracks and returns.

Track ids hold the time the connection was opened, to the millisecond, so a run started again
makes new ids and never sends a track twice; what was sent is written down as for files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from .decode import Frame
from .detect import Detector
from .errors import FootageError
from .ingest import Pipeline, Report, Settings
from .state import RunState
from .upload import TrackUploader

__all__ = ["STREAM_SCHEMES", "is_stream", "public_url", "watch"]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp", "srt", "tcp")


def is_stream(source: str) -> bool:
    return urlsplit(source).scheme.lower() in STREAM_SCHEMES and "://" in source


def public_url(url: str) -> str:
    """The URL without user name and password: what crops, logs and messages may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _open(url: str, timeout_s: float) -> cv2.VideoCapture | None:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # OpenCV's own warnings (a timeout, a refused open) would garble the one-line report
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    ms = int(timeout_s * 1000)
    capture = cv2.VideoCapture(
        url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
    )
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _frames(
    capture: cv2.VideoCapture, every: int, stop: threading.Event, started: float
) -> Iterator[Frame]:
    """Every ``every``-th frame, timed by the monotonic clock since ``started``; ends when
    the stream drops (a read fails or times out) or ``stop`` is set."""
    index = 0
    while not stop.is_set():
        if index % every:
            if not capture.grab():
                return
        else:
            ok, image = capture.read()
            if not ok or image is None:
                return
            yield Frame(index, time.monotonic() - started, np.ascontiguousarray(image))
        index += 1


def watch(
    url: str,
    detector: Detector,
    uploader: TrackUploader,
    settings: Settings,
    state: RunState,
    *,
    key: str,
    stop: threading.Event,
    retries: int = 8,
    flush_seconds: float = 60.0,
    timeout_s: float = 10.0,
    progress: bool = True,
    position: int | None = None,
) -> Report:
    """Index the stream at ``url`` until ``stop`` is set. Raises ``FootageError`` when it
    cannot be opened ``retries`` + 1 times in a row (at the start: nothing indexed)."""
    from tqdm import tqdm

    uploader.check()
    name = public_url(url)
    run = Pipeline(detector, uploader, settings, state, key)
    run.report.clips = 0
    failures, delay = 0, 1.0
    wall = time.perf_counter()
    with tqdm(unit="frame", disable=not progress, desc=settings.camera, position=position) as bar:
        while not stop.is_set():
            capture = _open(url, timeout_s)
            if capture is None:
                failures += 1
                if failures > retries:
                    said = "could not be opened" if run.report.clips == 0 else "did not come back"
                    raise FootageError(
                        f"{name}: the stream {said} ({failures} tries); "
                        f"{run.report.indexed} tracks indexed"
                    )
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            failures, delay = 0, 1.0
            run.report.clips += 1
            try:
                _session(run, capture, name, settings, stop, flush_seconds, bar)
            finally:
                capture.release()
    run.report.wall_s = time.perf_counter() - wall
    return run.report


def _session(
    run: Pipeline,
    capture: cv2.VideoCapture,
    name: str,
    settings: Settings,
    stop: threading.Event,
    flush_seconds: float,
    bar,
) -> None:
    """One connection: tracks from its first frame to its last."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 240 else 10.0
    opened = datetime.now(UTC).astimezone()
    started = time.monotonic()
    session = opened.strftime("%Y%m%dT%H%M%S") + f"{opened.microsecond // 1000:03d}"
    run.restart(fps)
    parts: dict[int, int] = {}  # track key -> parts sent while it lingered
    sent_at: dict[int, float] = {}  # track key -> seconds of its latest part (or its start)
    every = settings.detect_every

    def tid(track) -> str:
        return f"{settings.camera[:64]}-{session}-{track.number:05d}"

    def send(track, final: bool) -> None:
        part = parts.get(track.key, 0)
        chooser = run.choosers.pop(track.key, None) if final else run.choosers.get(track.key)
        entry = f"{tid(track)}/{part}"
        run.send(track, chooser, opened, name, fps, tid(track), entry=entry)
        # hours of tracks must not pile up in memory: the state file has them, and a new
        # connection's ids never meet an old one
        run.report.items.pop(entry, None)
        run.state.done.pop(entry, None)
        if final:
            parts.pop(track.key, None)
            sent_at.pop(track.key, None)
            run.last_seen.pop(track.key, None)
        else:
            parts[track.key] = part + 1
            run.choosers.pop(track.key, None)  # the next part collects afresh

    for frame in _frames(capture, every, stop, started):
        for track in run.step(frame):
            send(track, final=True)
        assert run.collector is not None
        for track in run.collector.tracker.live:
            if track.number is None:
                continue
            since = sent_at.setdefault(track.key, frame.seconds)
            if frame.seconds - since >= flush_seconds:
                send(track, final=False)
                sent_at[track.key] = frame.seconds
        run.report.frames += every
        run.report.video_seconds = frame.seconds
        bar.update(every)
        bar.set_postfix(tracks=run.report.tracks, indexed=run.report.indexed, refresh=False)
    for track in run.finish():
        send(track, final=True)
