"""Users' own footage: a folder per identity, or a CSV file listing the images.

Folder layout (``root`` is a folder)::

    ROOT/<identity>/<name with a c<N>, cam<N> or camera<N> token>.jpg   e.g. 0001_c2_000123.jpg
    ROOT/<identity>/<camera>/<any name>.jpg                             e.g. alice/lobby/17.png

CSV layout (``root`` is a ``.csv`` file): a header ``path,identity,camera`` and optionally
``split`` (``train``/``query``/``gallery``); paths are relative to the CSV's folder. Other
columns are ignored.

Identities and cameras may be any strings; they are numbered in natural sorted order
(``cam2`` before ``cam10``). Without a split, everything is for training unless
``test_fraction`` holds out that fraction of identities (chosen with ``seed``); within them one
image per identity and camera becomes a query and the rest the gallery. Single-camera data
loads fine for training; ``require_evaluable`` explains why it cannot be evaluated.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from ._common import (
    IMAGE_EXTENSIONS,
    SPLIT_FOLDERS,
    as_path,
    has_image_extension,
    list_folder,
    natural_key,
    require_folder,
    warn_skipped,
)
from .base import DatasetError, ImageRecord, ReIDDataset

__all__ = ["load_custom"]

_DISPLAY = "custom dataset"
# A camera token in a file name: delimited on the left, followed by a delimiter, the end, or a
# Market-style ``s<N>`` sequence (``0001_c2s1_...``).
_CAMERA_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:camera|cam|c)(\d+)(?=$|[^A-Za-z0-9]|s\d)", re.IGNORECASE
)
_CAMERA_NAME = re.compile(r"(?:camera|cam|c)(\d+)", re.IGNORECASE)
_LAYOUT = "ROOT/<identity>/<image with a c<N> or cam<N> token> or ROOT/<identity>/<camera>/<image>"
_CSV_SPLITS = ("train", "query", "gallery")

# (path, identity label, camera label)
_Item = tuple[Path, str, str]


def load_custom(
    root: str | os.PathLike[str], *, test_fraction: float = 0.0, seed: int = 0
) -> ReIDDataset:
    """Users' footage from a folder per identity or from a CSV file (see the module docstring).

    ``test_fraction`` (0 <= f < 1) holds out that fraction of identities for query/gallery;
    it cannot be combined with a CSV ``split`` column.
    """
    path = as_path(root)
    if not isinstance(test_fraction, int | float) or not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if path.suffix.lower() == ".csv" and not path.exists():
        raise DatasetError(f"{_DISPLAY} at {path}: the CSV file does not exist")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(
                f"{_DISPLAY} at {path}: expected a folder or a .csv file, got a {path.suffix} file"
            )
        items, splits = _read_csv(path)
        if splits is not None:
            if test_fraction:
                raise DatasetError(
                    f"{_DISPLAY} at {path}: the CSV has a 'split' column, so test_fraction "
                    "cannot be used (remove one or the other)"
                )
            return _from_explicit_split(path, items, splits)
    else:
        items = _read_folder(path)
    return _from_items(path, items, test_fraction, seed)


def _camera_label(folder_name: str) -> str:
    """``c2``/``cam2``/``camera2`` folders mean camera 2, matching the file-name tokens."""
    match = _CAMERA_NAME.fullmatch(folder_name)
    return str(int(match[1])) if match else folder_name


def _camera_from_name(folder: Path, name: str) -> str:
    stem = os.path.splitext(name)[0]
    cams = {str(int(m)) for m in _CAMERA_TOKEN.findall(stem)}
    if not cams:
        raise DatasetError(
            f"{_DISPLAY}: image {name!r} in {folder} has no camera: put a c<N> or cam<N> token "
            f"in its name (e.g. 0001_c2_000123.jpg) or move it into a per-camera sub-folder "
            f"(expected {_LAYOUT})"
        )
    if len(cams) > 1:
        raise DatasetError(
            f"{_DISPLAY}: image {name!r} in {folder} names several cameras "
            f"({', '.join(sorted(cams, key=natural_key))}); keep one camera token"
        )
    return cams.pop()


def _read_folder(root: Path) -> list[_Item]:
    """Images under ``ROOT/<identity>/`` (camera in the name) or ``ROOT/<identity>/<camera>/``."""
    require_folder(_DISPLAY, root)
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if present:
        raise DatasetError(
            f"{_DISPLAY} at {root}: holds {', '.join(present)}, the Market-1501 layout; load it "
            "as market1501, dukemtmcreid or synthetic rather than custom"
        )
    files, identities, extras = list_folder(_DISPLAY, root)
    stray_images = [f for f in files if has_image_extension(f)]
    if stray_images:
        raise DatasetError(
            f"{_DISPLAY} at {root}: image {stray_images[0]!r} lies directly in the root; "
            f"expected a folder per identity ({_LAYOUT})"
        )
    # tracks.json: what ``sona footage export-training`` writes beside the tracks' folders
    others = [f for f in files if f != "tracks.json"]
    warn_skipped(_DISPLAY, root, extras + others, "non-image file(s)")
    if not identities:
        raise DatasetError(f"{_DISPLAY} at {root}: no identity folders (expected {_LAYOUT})")
    items: list[_Item] = []
    skipped: list[str] = []
    empty: list[str] = []
    for identity in identities:
        folder = root / identity
        files, cameras, extras = list_folder(_DISPLAY, folder)
        skipped += [f"{identity}/{n}" for n in extras]
        before = len(items)
        for name in files:
            if has_image_extension(name):
                items.append((folder / name, identity, _camera_from_name(folder, name)))
            else:
                skipped.append(f"{identity}/{name}")
        for camera in cameras:
            cam_folder = folder / camera
            cam_files, deeper, cam_extras = list_folder(_DISPLAY, cam_folder)
            if deeper:
                raise DatasetError(
                    f"{_DISPLAY}: unexpected folder {deeper[0]!r} in {cam_folder}; "
                    f"expected {_LAYOUT}"
                )
            skipped += [f"{identity}/{camera}/{n}" for n in cam_extras]
            label = _camera_label(camera)
            for name in cam_files:
                if has_image_extension(name):
                    items.append((cam_folder / name, identity, label))
                else:
                    skipped.append(f"{identity}/{camera}/{name}")
        if len(items) == before:
            empty.append(identity)
    warn_skipped(_DISPLAY, root, skipped, "non-image file(s)")
    warn_skipped(_DISPLAY, root, empty, "identity folder(s) without images")
    if not items:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(f"{_DISPLAY}: no images ({exts}) in {root} (expected {_LAYOUT})")
    return items


def _read_csv(csv_path: Path) -> tuple[list[_Item], list[str] | None]:
    """Items listed by the CSV, and their splits when it has a ``split`` column."""
    where = f"{_DISPLAY} {csv_path}"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = _csv_rows(where, fh)
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise DatasetError(f"{where}: empty file (expected a header path,identity,camera)")
    header = [h.strip().lower() for h in rows[0][1]]
    required = ("path", "identity", "camera")
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {', '.join(missing)} in the header "
            f"{','.join(rows[0][1])!r} (expected path,identity,camera[,split])"
        )
    duplicated = sorted({h for h in header if header.count(h) > 1 and h in (*required, "split")})
    if duplicated:
        raise DatasetError(f"{where}: column(s) {', '.join(duplicated)} appear more than once")
    col = {name: header.index(name) for name in (*required, "split") if name in header}
    items: list[_Item] = []
    splits: list[str] | None = [] if "split" in col else None
    seen: dict[Path, int] = {}
    missing_files: list[Path] = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DatasetError(
                f"{where}, line {line}: {len(row)} fields, expected {len(header)} as in the header"
            )
        values = {name: row[i].strip() for name, i in col.items()}
        for name in required:
            if not values[name]:
                raise DatasetError(f"{where}, line {line}: empty {name!r}")
        path = csv_path.parent / values["path"]
        if not has_image_extension(path.name):
            raise DatasetError(
                f"{where}, line {line}: {values['path']!r} is not an image file name "
                f"(accepted: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        if path in seen:
            raise DatasetError(
                f"{where}, line {line}: {values['path']!r} is already listed on line {seen[path]}"
            )
        seen[path] = line
        if not path.is_file():
            missing_files.append(path)
        if splits is not None:
            split = values["split"].lower()
            if split not in _CSV_SPLITS:
                raise DatasetError(
                    f"{where}, line {line}: split {values['split']!r} is not one of "
                    f"{', '.join(_CSV_SPLITS)}"
                )
            splits.append(split)
        items.append((path, values["identity"], values["camera"]))
    if missing_files:
        raise DatasetError(
            f"{where}: {len(missing_files)} listed image(s) do not exist, the first is "
            f"{missing_files[0]} (paths are relative to the CSV's folder)"
        )
    if not items:
        raise DatasetError(f"{where}: no images listed under the header")
    return items, splits


def _csv_rows(where: str, fh: TextIO) -> list[tuple[int, list[str]]]:
    reader = csv.reader(fh)
    out = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                out.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetError(f"{where}, line {reader.line_num}: {exc}") from None
    return out


def _index(labels: set[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(sorted(labels, key=natural_key))}


def _records(items: list[_Item], pids: dict[str, int], cams: dict[str, int]) -> list[ImageRecord]:
    return sorted(ImageRecord(p, pids[i], cams[c]) for p, i, c in items)


def _from_explicit_split(root: Path, items: list[_Item], splits: list[str]) -> ReIDDataset:
    """A CSV's own split: training identities relabelled, query/gallery numbered over all."""
    cams = _index({c for _, _, c in items})
    pids = _index({i for _, i, _ in items})
    parts: dict[str, list[_Item]] = {s: [] for s in _CSV_SPLITS}
    for item, split in zip(items, splits, strict=True):
        parts[split].append(item)
    train_pids = _index({i for _, i, _ in parts["train"]})
    return ReIDDataset(
        name="custom",
        root=root,
        train=_records(parts["train"], train_pids, cams),
        query=_records(parts["query"], pids, cams),
        gallery=_records(parts["gallery"], pids, cams),
    )


def _from_items(root: Path, items: list[_Item], test_fraction: float, seed: int) -> ReIDDataset:
    """All for training, or ``test_fraction`` of the identities held out for query/gallery."""
    cams = _index({c for _, _, c in items})
    pids = _index({i for _, i, _ in items})
    if not test_fraction:
        return ReIDDataset(name="custom", root=root, train=_records(items, pids, cams))
    identities = sorted(pids, key=natural_key)
    if len(identities) < 2:
        raise DatasetError(
            f"{_DISPLAY} at {root}: test_fraction needs at least 2 identities, found "
            f"{len(identities)}"
        )
    rng = random.Random(seed)
    n_test = min(max(1, math.floor(test_fraction * len(identities) + 0.5)), len(identities) - 1)
    held_out = set(rng.sample(identities, n_test))
    train = [item for item in items if item[1] not in held_out]
    by_identity: dict[str, list[_Item]] = defaultdict(list)
    for item in sorted(items):
        if item[1] in held_out:
            by_identity[item[1]].append(item)
    query: list[_Item] = []
    gallery: list[_Item] = []
    for identity in sorted(by_identity, key=natural_key):
        q, g = _split_identity(by_identity[identity], rng)
        query += q
        gallery += g
    train_pids = _index({i for _, i, _ in train})
    return ReIDDataset(
        name="custom",
        root=root,
        train=_records(train, train_pids, cams),
        query=_records(query, pids, cams),
        gallery=_records(gallery, pids, cams),
    )


def _split_identity(images: list[_Item], rng: random.Random) -> tuple[list[_Item], list[_Item]]:
    """One query per camera, kept only while the gallery still shows the person elsewhere.

    A query without a cross-camera gallery match is ignored by the protocol, so such an image
    is worth more in the gallery; people seen by one camera become gallery distractors.
    """
    per_camera: dict[str, list[_Item]] = defaultdict(list)
    for item in images:
        per_camera[item[2]].append(item)
    queries = {cam: rng.choice(imgs) for cam, imgs in sorted(per_camera.items())}
    changed = True
    while changed:
        changed = False
        gallery_cams = {item[2] for item in images if item not in queries.values()}
        for cam in sorted(queries, key=natural_key):
            if not gallery_cams - {cam}:
                del queries[cam]
                changed = True
                break
    chosen = set(queries.values())
    return sorted(chosen), [item for item in images if item not in chosen]
