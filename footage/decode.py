"""Frames from a video file (any container and codec OpenCV's bundled FFmpeg reads) or from a
folder of images taken at a known rate.

A source is checked whole before any frame is used (``open_source``): a video is scanned once
with ``grab`` (cheap: no colour conversion), so a truncated or damaged file is refused before
anything is indexed rather than half-way through, and the true frame count is known to the
det.txt check. Each frame carries its time since the start of the source, from the stream's
presentation time when it has one, else from its index and the frame rate.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import FootageError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "ImageSequence",
    "Source",
    "VideoFile",
    "open_source",
    "open_sources",
    "prefetch",
]

VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: A video may end this many frames short of what its header says before it counts as cut.
_SHORT_FRAMES = 2


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based
    seconds: float  # since the first frame of the source
    image: np.ndarray  # BGR, uint8, [H, W, 3]


class Source:
    """Frames of one clip; ``frames`` is its checked length, ``fps`` its rate."""

    name: str
    fps: float
    frames: int
    width: int
    height: int

    def __iter__(self) -> Iterator[Frame]:
        return self.sample(1)

    def sample(self, every: int) -> Iterator[Frame]:
        """Every ``every``-th frame (0, every, 2 every, ...), the others skipped as cheaply as
        the source allows."""
        raise NotImplementedError

    @property
    def duration(self) -> float:
        return self.frames / self.fps


class VideoFile(Source):
    def __init__(self, path: Path, fps: float | None = None, max_seconds: float | None = None):
        self.path = path
        self.name = path.name
        self.rate_given = fps is not None  # then frame times are index / fps, not the stream's
        capture = self._open()
        try:
            rate = fps or capture.get(cv2.CAP_PROP_FPS)
            if not rate or not np.isfinite(rate) or rate <= 0:
                raise FootageError(f"{path}: the stream gives no frame rate; give --fps")
            self.fps = float(rate)
            self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            count = 0
            while capture.grab():
                count += 1
        finally:
            capture.release()
        if count == 0 or self.width <= 0 or self.height <= 0:
            raise FootageError(f"{path}: no frame could be decoded (empty or damaged video)")
        if declared > 0 and count < declared - _SHORT_FRAMES:
            raise FootageError(
                f"{path}: the video ends after {count} of the {declared} frames its header "
                "declares (truncated or damaged); nothing indexed"
            )
        self.frames = count
        if max_seconds is not None:
            self.frames = min(count, max(1, round(max_seconds * self.fps)))

    def _open(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise FootageError(f"{self.path}: no such file")
        # FFmpeg's own messages ("overread 8") would garble the one line that reports damage
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read by each open: AV_LOG_QUIET
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise FootageError(f"{self.path}: not a video FFmpeg can read")
        return capture

    def sample(self, every: int) -> Iterator[Frame]:
        capture = self._open()
        try:
            for index in range(self.frames):
                if index % every:
                    # decoded (a codec's frames depend on each other) but not converted to
                    # BGR, the costlier half of reading a frame
                    if not capture.grab():
                        raise FootageError(
                            f"{self.path}: frame {index} could not be decoded on the second read"
                        )
                    continue
                ok, image = capture.read()
                if not ok:
                    raise FootageError(
                        f"{self.path}: frame {index} could not be decoded on the second read"
                    )
                # the frame's presentation time when the stream has one, else index / rate
                pts = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                stream = not self.rate_given and (index == 0 or pts > 0)
                seconds = pts if stream else index / self.fps
                yield Frame(index, float(seconds), image)
        finally:
            capture.release()


class ImageSequence(Source):
    """A folder of still images in name order, one frame each at ``fps``."""

    def __init__(self, folder: Path, fps: float | None, max_seconds: float | None = None):
        if not fps or fps <= 0:
            raise FootageError(f"{folder}: a folder of images needs --fps (frames per second)")
        self.name = folder.name
        self.fps = float(fps)
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FootageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        sizes = set()
        for path in self.paths:  # headers only: a file that is no image is refused up front
            try:
                with Image.open(path) as image:
                    sizes.add(image.size)
            except (OSError, UnidentifiedImageError):
                raise FootageError(f"{path}: not an image that can be read") from None
        if len(sizes) > 1:
            raise FootageError(f"{folder}: the images differ in size ({sorted(sizes)[:3]}...)")
        ((self.width, self.height),) = sizes
        self.frames = len(self.paths)
        if max_seconds is not None:
            self.frames = min(self.frames, max(1, round(max_seconds * self.fps)))

    def sample(self, every: int) -> Iterator[Frame]:
        for index, path in enumerate(self.paths[: self.frames]):
            if index % every:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FootageError(f"{path}: the image could not be decoded")
            yield Frame(index, index / self.fps, image)


def open_source(path: Path, fps: float | None = None, max_seconds: float | None = None) -> Source:
    """A video file, or a folder of images (``fps`` needed)."""
    if path.is_dir():
        return ImageSequence(path, fps, max_seconds)
    return VideoFile(path, fps, max_seconds)


def open_sources(
    path: Path, fps: float | None = None, max_seconds: float | None = None
) -> list[Source]:
    """The clips at ``path``: one video, a folder of videos (name order, each checked before
    any is used), or one image sequence (a folder of images)."""
    if not path.exists():
        raise FootageError(f"{path}: no such file or folder")
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            return [VideoFile(p, fps, max_seconds) for p in videos]
    return [open_source(path, fps, max_seconds)]


_END = object()


def prefetch(frames: Iterable[Frame], depth: int = 4) -> Iterator[Frame]:
    """The frames, decoded ``depth`` ahead in a thread: FFmpeg and OpenCV release the GIL, so
    decoding runs beside detection on another core. Memory stays at ``depth`` frames."""
    held: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        held.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            held.put(_END)
        except BaseException as exc:  # handed to the reader, raised there
            held.put(exc)

    thread = threading.Thread(target=work, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = held.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                held.get_nowait()
            except queue.Empty:
                thread.join(0.05)
