"""Where crop bytes live: one crop store, one durability guarantee, for every backend.

The FAISS store keeps its crops under its data directory; the Milvus store keeps them in a
folder every replica mounts. Both write through ``LocalCropStore``: each crop goes to a
temporary name, is fsynced, renamed into place and its directory fsynced, so a reader (on any
replica) sees the whole crop or none, and rewriting a key (an import run again) replaces it
atomically. A batch goes through a small thread pool: concurrent fsyncs share journal commits,
several times faster per file than one after another.

Where a store removes whole days (Milvus's day partitions), it keys crops by day too
(``day_crop_key``), so that a day's crops are one folder, removed with ``delete_tree``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from client.media import suffix_for

from .base import StoreError, StoreFullError
from .durable import fsync_dir, is_full, mkdirs, write_new_file

__all__ = ["CropStore", "LocalCropStore", "crop_key", "day_crop_key", "day_crop_prefix"]


def crop_key(gallery: str, item_id: str, media_type: str) -> str:
    """The key of an item's crop: ``<gallery>/<xx>/<item_id>.<ext>`` (xx: the id's first two
    characters, so no folder grows past a few thousand entries)."""
    return f"{gallery}/{item_id[:2]}/{item_id}{suffix_for(media_type)}"


def day_crop_prefix(gallery: str, day: date) -> str:
    """The folder of a gallery's crops of one UTC day: ``<gallery>/<YYYYMMDD>`` (eight digits,
    never a two-character folder of ``crop_key``)."""
    return f"{gallery}/{day:%Y%m%d}"


def day_crop_key(gallery: str, day: date, item_id: str, media_type: str) -> str:
    """The key of a crop kept by day: ``<gallery>/<YYYYMMDD>/<xx>/<item_id>.<ext>``."""
    return f"{day_crop_prefix(gallery, day)}/{item_id[:2]}/{item_id}{suffix_for(media_type)}"


class CropStore(abc.ABC):
    """Where crop bytes live so that every service replica reaches them.

    Keys are relative paths made by ``crop_key``.
    """

    @abc.abstractmethod
    def put_many(self, keys: Sequence[str], data: Sequence[bytes]) -> None:
        """Store every crop durably, or none: on failure, remove what was written and raise."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a crop; a missing one is not an error."""

    @abc.abstractmethod
    def entries(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (epoch seconds): for orphan sweeps."""

    def delete_tree(self, prefix: str, older_than: float) -> int:
        """Remove the crops under ``prefix/`` written before ``older_than`` (epoch seconds);
        returns how many. Younger ones stay (a write racing the removal), for the orphan sweep."""
        removed = 0
        for key, mtime in list(self.entries()):
            if key.startswith(f"{prefix}/") and mtime < older_than:
                self.delete(key)
                removed += 1
        return removed

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections)."""


class LocalCropStore(CropStore):
    """Crops as files under ``root`` (a data directory, or a folder every replica mounts)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise (StoreFullError if is_full(e) else StoreError)(f"crops dir: {e}") from e
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
            raise StoreError(f"bad crop key {key!r}")
        return self.root.joinpath(*parts)

    def _write(self, key: str, data: bytes) -> Path:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write_new_file(tmp, data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    def put_many(self, keys: Sequence[str], data: Sequence[bytes]) -> None:
        paths = [self._path(k) for k in keys]
        try:
            dirs = {p.parent for p in paths}
            changed: set[Path] = set()
            for d in sorted(dirs):
                changed |= mkdirs(d)
            if len(keys) == 1:
                self._write(keys[0], data[0])
            else:
                with self._lock:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(8, thread_name_prefix="crop-fsync")
                futures = [
                    self._executor.submit(self._write, k, d)
                    for k, d in zip(keys, data, strict=True)
                ]
                errors = [f.exception() for f in futures]
                first = next((e for e in errors if e is not None), None)
                if first is not None:
                    raise first
            for d in sorted(dirs | changed):  # the renames, and directories made for them
                fsync_dir(d)
        except BaseException as e:
            for p in paths:
                with contextlib.suppress(OSError):
                    p.unlink()
            if is_full(e):
                raise StoreFullError(f"disk full while writing crops: {e}") from e
            if isinstance(e, OSError):
                raise StoreError(f"cannot write crops: {e}") from e
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_tree(self, prefix: str, older_than: float) -> int:
        """One walk of the folder: files unlinked, then the folders left empty."""
        top = self._path(prefix)
        removed = 0
        for dirpath, _dirs, files in os.walk(top, topdown=False):
            for name in files:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                        removed += 1
            with contextlib.suppress(OSError):  # not empty: a younger crop stays
                os.rmdir(dirpath)
        if removed:
            with contextlib.suppress(OSError):
                fsync_dir(top.parent)
        return removed

    def entries(self) -> Iterator[tuple[str, float]]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    yield path.relative_to(self.root).as_posix(), path.stat().st_mtime

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
