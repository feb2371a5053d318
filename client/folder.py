"""Index a folder of crops through the HTTP API (``sona gallery add``).

Camera and time come from Market-1501-style file names (``0002_c3s1_000451_01.jpg``: camera 3,
frame 451, at ``fps`` frames a second after ``start``) or from a CSV with the header
``path,camera_id,timestamp[,identity,track_id]`` (paths relative to the CSV). Crops go up in
batches through ``SonaClient``; a 503/429 is retried after its Retry-After.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .api import SonaClient, SonaError, SonaUnreachable
from .media import UPLOAD_MEDIA_TYPES

__all__ = ["Crop", "crops_from_csv", "crops_from_folder", "upload"]

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?_(\d+)")


@dataclass(frozen=True)
class Crop:
    path: Path
    camera_id: str
    timestamp: str  # ISO 8601 with offset
    identity: str | None = None
    track_id: str | None = None

    def metadata(self) -> dict[str, str]:
        meta = {"camera_id": self.camera_id, "timestamp": self.timestamp}
        if self.identity is not None:
            meta["identity"] = self.identity
        if self.track_id is not None:
            meta["track_id"] = self.track_id
        return meta


def crops_from_folder(
    folder: Path, *, start: datetime, fps: float = 25.0, with_identity: bool = False
) -> list[Crop]:
    """Crops named like Market-1501's; junk (identity -1) is skipped, 0000 has no identity."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "the folder does not exist"
        raise ValueError(f"{folder}: {what}")
    crops, unnamed = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in UPLOAD_MEDIA_TYPES):
        match = MARKET_NAME.match(path.name)
        if match is None:
            unnamed.append(path.name)
            continue
        pid, camera, frame = int(match.group(1)), match.group(2), int(match.group(3))
        if pid < 0:
            continue
        when = (start + timedelta(seconds=frame / fps)).isoformat()
        identity = f"{pid:04d}" if with_identity and pid > 0 else None
        crops.append(Crop(path, f"c{camera}", when, identity))
    if unnamed:
        raise ValueError(
            f"{len(unnamed)} file(s) in {folder} are not named like PPPP_cC..._FFFFFF "
            f"(e.g. {unnamed[0]}); give their camera and time in a CSV with --csv"
        )
    return crops


def crops_from_csv(path: Path) -> list[Crop]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    crops = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "camera_id", "timestamp"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the header lacks {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            image = (path.parent / row["path"]).resolve()
            if not image.is_file():
                raise ValueError(f"{path}:{line}: no file {row['path']}")
            crops.append(
                Crop(
                    image,
                    row["camera_id"],
                    row["timestamp"],
                    row.get("identity") or None,
                    row.get("track_id") or None,
                )
            )
    return crops


def _batches(crops: list[Crop], size: int) -> Iterator[list[Crop]]:
    for start in range(0, len(crops), size):
        yield crops[start : start + size]


def upload(
    crops: list[Crop],
    url: str,
    *,
    gallery: str = "default",
    api_key: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    retries: int = 20,
) -> tuple[int, list[str]]:
    """POST the crops to ``url``/gallery through ``SonaClient`` (which retries a busy or
    unreachable service); returns (items added, error messages). ``SonaUnreachable`` when the
    service cannot be reached at all."""
    from tqdm import tqdm

    added, errors = 0, []
    with (
        SonaClient(url, api_key=api_key, retries=retries) as client,
        tqdm(total=len(crops), unit="crop", disable=not progress, desc=f"gallery {gallery}") as bar,
    ):
        for batch in _batches(crops, batch_size):
            try:
                added += len(
                    client.add(
                        [c.path for c in batch],
                        gallery=gallery,
                        metadata=[c.metadata() for c in batch],
                    )
                )
            except SonaUnreachable:
                raise
            except SonaError as exc:
                errors.append(f"{batch[0].path.name}..: {exc.status} {exc.detail}")
            bar.update(len(batch))
    return added, errors
