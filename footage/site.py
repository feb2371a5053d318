"""A whole site in one command: its cameras from a CSV file (``camera_id,source,start``) or
from ``--camera C=SOURCE`` arguments, each run in its own worker process.

One process per camera, not threads: detection is CPU work that holds the GIL in places, and
a camera that fails (a damaged file) must not take the others down. Each camera keeps its own
resumable state (the same file a single-camera run would use), so a site run stopped and
started again resumes every camera where it was.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .errors import FootageError

__all__ = ["COLUMNS", "Camera", "parse_cameras", "read_sites"]

COLUMNS = ("camera_id", "source", "start")
_REQUIRED = ("camera_id", "source")


@dataclass(frozen=True)
class Camera:
    camera_id: str
    source: str  # a file, a folder or a stream URL
    start: str | None  # ISO 8601; None for a live stream


def _check(cameras: list[Camera], where: str) -> list[Camera]:
    if not cameras:
        raise FootageError(f"{where}: no cameras")
    seen: set[str] = set()
    for cam in cameras:
        if not cam.camera_id or "," in cam.camera_id:
            raise FootageError(f"{where}: camera id {cam.camera_id!r} is empty or has a comma")
        if cam.camera_id in seen:
            raise FootageError(f"{where}: camera {cam.camera_id!r} appears twice")
        if not cam.source:
            raise FootageError(f"{where}: camera {cam.camera_id!r} has no source")
        seen.add(cam.camera_id)
    return cameras


def read_sites(path: Path) -> list[Camera]:
    """The cameras of a CSV file with a header row; ``start`` may be empty for streams."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FootageError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise FootageError(
            f"{path}: unknown column {unknown[0]!r} (the columns are {', '.join(COLUMNS)})"
        )
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise FootageError(f"{path}: no {missing[0]!r} column (header: {', '.join(COLUMNS)})")
    cameras = []
    for line, row in enumerate(reader, start=2):
        if None in row:
            raise FootageError(f"{path}, line {line}: more fields than columns")
        values = {k.strip(): (v or "").strip() for k, v in row.items()}
        cameras.append(Camera(values["camera_id"], values["source"], values.get("start") or None))
    return _check(cameras, str(path))


def parse_cameras(values: list[str], start: str | None) -> list[Camera]:
    """``C=SOURCE`` arguments, all starting at ``start`` (files) or now (streams)."""
    cameras = []
    for value in values:
        camera, sep, source = value.partition("=")
        if not sep:
            raise FootageError(f"--camera {value!r}: with several cameras, write CAMERA=SOURCE")
        cameras.append(Camera(camera.strip(), source.strip(), start))
    return _check(cameras, "--camera")
