"""What a run has indexed, so that a run interrupted and started again indexes no track twice.

One JSON-lines file per (clip, camera, start, gallery, service, detection settings): its name
is a digest of them, in ``$XDG_CACHE_HOME/sona/footage`` (``~/.cache``) unless ``--state``
names one. A track is written ``pending`` before its crops are sent and ``done`` with its
item ids after the service acknowledged them; each line is flushed and fsynced. On a rerun,
``done`` tracks are skipped, and a ``pending`` one (the run stopped between sending and
writing down) is looked up on the service (``GET /gallery/tracks/{id}``) before it is sent.
A run that reached the end writes ``complete``: running it again does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["RunState", "default_state_path", "run_key"]


def run_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def default_state_path(key: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sona" / "footage" / f"{key}.jsonl"


class RunState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, list[str]] = {}
        self.pending: set[str] = set()
        self.complete = False
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: its track is simply not recorded
                status, track = entry.get("status"), entry.get("track")
                if status == "pending":
                    self.pending.add(track)
                elif status == "done":
                    self.done[track] = list(entry.get("items", []))
                    self.pending.discard(track)
                elif status == "complete":
                    self.complete = True
        self._handle = None

    @property
    def resumed(self) -> bool:
        return bool(self.done or self.pending)

    def _write(self, entry: dict) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def mark_pending(self, track: str) -> None:
        self.pending.add(track)
        self._write({"status": "pending", "track": track})

    def mark_done(self, track: str, items: list[str], **extra: str | float) -> None:
        """``extra``: what the record may say besides (when the person was last seen)."""
        self.pending.discard(track)
        self.done[track] = items
        self._write({"status": "done", "track": track, "items": items} | extra)

    def mark_complete(self) -> None:
        self.complete = True
        self._write({"status": "complete"})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
