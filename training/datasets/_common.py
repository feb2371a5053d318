"""Shared parts of the loaders: folder listing, Market-style parsing, table-1 checks, evaluability.

Loaders only list folders and parse file names; no image is ever opened, so tens of thousands of
paths load in a fraction of a second and an unreadable image is reported by whatever decodes it.
Every problem with a folder is raised as one ``DatasetError`` whose message names the folder and
what is missing, so a user never has to read a traceback from deep inside a loader.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.media import IMAGE_SUFFIXES

from .base import DatasetError, ImageRecord, ReIDDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "PAPER_COUNTS",
    "SPLIT_FOLDERS",
    "DatasetCountWarning",
    "SkippedFilesWarning",
    "SplitCounts",
    "require_evaluable",
]

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the project's one table, in client.media
# What operating systems and photo tools drop into folders: skipped with a warning, not an error.
_KNOWN_EXTRA_NAMES = frozenset(
    {"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store", "@eadir", "__macosx"}
)
SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
_SPLITS = dict(zip(SPLIT_FOLDERS, ("train", "query", "gallery"), strict=True))


class DatasetCountWarning(UserWarning):
    """A benchmark's image or identity counts differ from the paper's table 1."""


class SkippedFilesWarning(UserWarning):
    """Known extra files (Thumbs.db, .DS_Store, ...) or stray files were left out of a dataset."""


@dataclass(frozen=True)
class SplitCounts:
    """One benchmark's row of the paper's table 1, counted the way the paper counts.

    ``*_images`` count every image file in the split folder as distributed, junk (identity -1)
    and distractors (identity 0) included: that is how Market-1501's gallery has 19,732 images
    (15,913 once its 3,819 junk images are left out). ``train_ids`` counts the identities of the
    training images; ``test_ids`` the identities across query and gallery, leaving out Market's
    junk (-1) and distractor (0) labels, which are not people (750 for Market-1501), while
    DukeMTMC-reID's 408 distractor identities carry ordinary numbers and count (1,110).
    """

    train_images: int
    query_images: int
    gallery_images: int
    train_ids: int
    test_ids: int


# Table 1 of the paper (cross-checked with section 3.1 and the datasets' published figures).
PAPER_COUNTS: dict[str, SplitCounts] = {
    "market1501": SplitCounts(12936, 3368, 19732, 751, 750),
    "dukemtmcreid": SplitCounts(16522, 2228, 17661, 702, 1110),
    "cuhk03-labeled": SplitCounts(7368, 1400, 5328, 767, 700),
    "cuhk03-detected": SplitCounts(7365, 1400, 5332, 767, 700),
}

_COUNT_LABELS = {
    "train_images": "train images",
    "query_images": "query images",
    "gallery_images": "gallery images",
    "train_ids": "train identities",
    "test_ids": "test identities (query + gallery)",
}


def as_path(root: str | os.PathLike[str]) -> Path:
    """An absolute path (symlinks kept), so records stay valid whatever the working folder."""
    return Path(os.fspath(root)).expanduser().absolute()


def is_known_extra(name: str) -> bool:
    """Hidden files (``.DS_Store``, macOS ``._x.jpg``) and tool clutter such as ``Thumbs.db``."""
    return name.startswith(".") or name.lower() in _KNOWN_EXTRA_NAMES


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def natural_key(text: str) -> tuple[tuple[object, ...], str]:
    """Sort key putting ``cam2`` before ``cam10``; the raw text breaks ties deterministically."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text


def list_folder(display: str, folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(files, sub-folders, known extras) in ``folder``, sorted by name; nothing is opened."""
    files: list[str] = []
    dirs: list[str] = []
    extras: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if is_known_extra(entry.name):
                    extras.append(entry.name)
                elif entry.is_dir():
                    dirs.append(entry.name)
                else:
                    files.append(entry.name)
    except OSError as exc:
        raise DatasetError(
            f"{display}: cannot list folder {folder}: {exc.strerror or exc}"
        ) from None
    return sorted(files), sorted(dirs), sorted(extras)


def warn_skipped(display: str, folder: Path, names: Sequence[str], what: str) -> None:
    if not names:
        return
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    warnings.warn(
        f"{display}: skipped {len(names)} {what} in {folder}: {shown}",
        SkippedFilesWarning,
        stacklevel=4,
    )


def child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name``, matched case-insensitively."""
    exact = parent / name
    if exact.is_dir():
        return exact
    try:
        with os.scandir(parent) as entries:
            for entry in entries:
                if entry.name.lower() == name.lower() and entry.is_dir():
                    return parent / entry.name
    except OSError:
        return None
    return None


def require_folder(display: str, root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"{display} at {root}: the folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{display} at {root}: not a folder")


def find_split_root(display: str, root: Path, subfolders: Iterable[str]) -> Path:
    """``root`` itself when it holds the split folders, else its first sub-folder that does.

    Users point at either the dataset folder or the folder they unpacked it into; both work.
    """
    require_folder(display, root)
    if any((root / s).is_dir() for s in SPLIT_FOLDERS):
        return root
    candidates = [c for c in (child_dir(root, name) for name in subfolders) if c is not None]
    for candidate in candidates:
        if any((candidate / s).is_dir() for s in SPLIT_FOLDERS):
            return candidate
    # Nothing usable: report the missing folders against the most plausible place.
    return candidates[0] if candidates else root


def require_split_folders(display: str, folder: Path, hint: str = "") -> None:
    missing = [s for s in SPLIT_FOLDERS if not (folder / s).is_dir()]
    if not missing:
        return
    plural = "s" if len(missing) > 1 else ""
    names = ", ".join(repr(m) for m in missing)
    raise DatasetError(
        f"{display} at {folder}: missing folder{plural} {names} "
        f"(expected {', '.join(SPLIT_FOLDERS)}{hint})"
    )


@dataclass(frozen=True)
class NamePattern:
    """A benchmark's file-name convention: ``regex`` has groups ``pid`` and ``cam`` (1-based)."""

    regex: re.Pattern[str]
    text: str  # shown to users, e.g. PPPP_cCsS_FFFFFF_NN.jpg


MARKET_PATTERN = NamePattern(
    re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>\d+)s\d+_\d+_\d+"), "PPPP_cCsS_FFFFFF_NN.jpg"
)


def parse_split_folder(
    display: str, folder: Path, pattern: NamePattern
) -> list[tuple[Path, int, int]]:
    """(path, original identity, 0-based camera) for every image in ``folder``, sorted by name."""
    files, dirs, extras = list_folder(display, folder)
    warn_skipped(display, folder, extras + [d + "/" for d in dirs], "extra file(s)/folder(s)")
    out: list[tuple[Path, int, int]] = []
    for name in files:
        stem, ext = os.path.splitext(name)
        match = pattern.regex.fullmatch(stem) if ext.lower() in IMAGE_EXTENSIONS else None
        if match is None:
            raise DatasetError(
                f"{display}: file {name!r} in {folder} does not follow the expected pattern "
                f"{pattern.text} (images with extension {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        cam = int(match["cam"])
        if cam < 1:
            raise DatasetError(
                f"{display}: file {name!r} in {folder} names camera {cam}; cameras in "
                f"{pattern.text} are numbered from 1"
            )
        out.append((folder / name, int(match["pid"]), cam - 1))
    if not out:
        raise DatasetError(f"{display}: no images in {folder}")
    return out


def relabel(items: Iterable[tuple[Path, int, int]]) -> list[ImageRecord]:
    """Training records with identities renumbered 0..N-1 in order of the original identity."""
    items = list(items)
    mapping = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [ImageRecord(path, mapping[pid], cam) for path, pid, cam in items]


def check_paper_counts(name: str, display: str, root: Path, found: SplitCounts) -> None:
    """Warn (``DatasetCountWarning``) when ``found`` differs from table 1; loading goes on."""
    expected = PAPER_COUNTS.get(name)
    if expected is None:
        return
    diffs = [
        f"{label} expected {getattr(expected, key)}, found {getattr(found, key)}"
        for key, label in _COUNT_LABELS.items()
        if getattr(expected, key) != getattr(found, key)
    ]
    if diffs:
        warnings.warn(
            f"{display} at {root} differs from the paper's table 1: {'; '.join(diffs)} "
            "(images counted per folder, junk and distractors included). Results will not be "
            "comparable with published ones.",
            DatasetCountWarning,
            stacklevel=4,
        )


def load_split_layout(
    *,
    name: str,
    display: str,
    folder: Path,
    pattern: NamePattern,
    junk_pid: int | None,
    distractor_pid: int | None,
    check_counts: bool,
) -> ReIDDataset:
    """Read ``bounding_box_train``/``query``/``bounding_box_test`` under ``folder``.

    Junk images (``junk_pid``) are left out of every split: the Market protocol ignores them.
    Distractors (``distractor_pid``) stay in the gallery, where they make retrieval harder as the
    protocol intends. Training identities are relabelled; query and gallery keep the original
    identities, so a result can be traced back to the file names.
    """
    raw = {split: parse_split_folder(display, folder / split, pattern) for split in SPLIT_FOLDERS}
    if check_counts:
        not_people = {junk_pid, distractor_pid}
        test_pids = {pid for s in ("query", "bounding_box_test") for _, pid, _ in raw[s]}
        found = SplitCounts(
            train_images=len(raw["bounding_box_train"]),
            query_images=len(raw["query"]),
            gallery_images=len(raw["bounding_box_test"]),
            train_ids=len({pid for _, pid, _ in raw["bounding_box_train"]} - {junk_pid}),
            test_ids=len(test_pids - not_people),
        )
        check_paper_counts(name, display, folder, found)
    kept = {}
    for split, items in raw.items():
        kept[split] = [item for item in items if item[1] != junk_pid]
        if not kept[split]:
            raise DatasetError(
                f"{display}: only junk images (identity {junk_pid}) in {folder / split}"
            )
    return ReIDDataset(
        name=name,
        root=folder,
        train=relabel(kept["bounding_box_train"]),
        query=[ImageRecord(*item) for item in kept["query"]],
        gallery=[ImageRecord(*item) for item in kept["bounding_box_test"]],
    )


def require_evaluable(dataset: ReIDDataset) -> ReIDDataset:
    """Return ``dataset`` if the Market-1501 protocol can evaluate it, else raise ``DatasetError``.

    The protocol ignores gallery images of the query's own identity and camera, so a query
    needs a gallery image of the same person from another camera; data from a single camera, or
    a training-only dataset, yields no score at all rather than a misleading one.
    """
    where = f"dataset {dataset.name!r} at {dataset.root}"
    if not dataset.query and not dataset.gallery:
        raise DatasetError(
            f"{where} cannot be evaluated: its query and gallery sets are empty (it was loaded "
            "for training only; hold out identities with test_fraction=..., or give a CSV a "
            "'split' column)"
        )
    cameras = {r.camid for r in dataset.query} | {r.camid for r in dataset.gallery}
    if len(cameras) < 2:
        raise DatasetError(
            f"{where} cannot be evaluated: all query and gallery images come from one camera "
            f"(camera id {cameras.pop()}); the Market-1501 protocol ignores same-camera matches, "
            "so evaluation needs the same people seen by at least two cameras"
        )
    for split in ("query", "gallery"):
        if not getattr(dataset, split):
            raise DatasetError(
                f"{where} cannot be evaluated: its {split} set is empty (with test_fraction, "
                "only people seen by two or more cameras give queries)"
            )
    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for r in dataset.gallery:
        gallery_cams[r.pid].add(r.camid)
    if not any(gallery_cams[q.pid] - {q.camid} for q in dataset.query):
        raise DatasetError(
            f"{where} cannot be evaluated: none of its {len(dataset.query)} query images has a "
            "gallery image of the same identity from another camera (the Market-1501 protocol "
            "ignores same-camera matches)"
        )
    return dataset
