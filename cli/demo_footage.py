"""The demo on real footage (``sona demo --footage``, ``SONA_DEMO_FOOTAGE``): the synthetic demo
model adapted to a clip's own tracks, and the clip's tracks indexed with their provenance.

It is ``sona adapt``'s pipeline run for the demo: the clip to a training set of tracks (``sona
footage export-training``), the demo model fine-tuned on all of them (the ``adapt`` preset cut
to a few epochs, tracks clustered as ``sona adapt`` does), then the clip indexed through the
API (``sona footage add``). Nothing is held out: this is a demo, not a measurement (``sona
adapt`` measures). Everything is kept under a folder named for the clip's path, size and
modification time and the settings, so a second start with the same clip reuses it; the
gallery lives there too, so a gallery embedded by one model is never searched with another.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from training.demo import Demo

__all__ = ["START", "FootageDemo", "adapt_demo", "index_footage", "plan"]

#: The clip's first frame, as the synthetic gallery's: a demo has no real time.
START = "2024-01-01T00:00:00+00:00"
#: Raised when what is kept under the folder changes meaning, so an old one is not reused.
VERSION = "1"
ROUND = re.compile(r"round (\d+)/(\d+)\b")


@dataclass(frozen=True)
class FootageDemo:
    footage: Path
    root: Path  # everything built from the clip, kept
    camera: str
    seconds: float | None  # only the clip's first seconds
    epochs: int  # of adaptation

    @property
    def tracks(self) -> Path:
        return self.root / "tracks"

    @property
    def checkpoint(self) -> Path:
        return self.root / "adapted.pt"

    @property
    def store(self) -> Path:
        return self.root / "gallery"

    def example_query(self) -> Path:
        return sorted(self.tracks.glob("*/*.jpg"))[0]


def plan(args: argparse.Namespace, data_dir: Path) -> FootageDemo | None:
    """The footage demo the options ask for (None: the synthetic demo); a missing clip or a
    bad setting is one line before anything starts."""
    name = getattr(args, "demo_footage", None)
    if not name:
        return None
    footage = Path(name).expanduser()
    if not footage.is_file():
        raise UserError(f"demo footage {name}: no such video file")
    seconds, epochs = args.demo_footage_seconds, args.demo_adapt_epochs
    if seconds is not None and seconds <= 0:
        raise UserError("--demo-footage-seconds must be > 0")
    if epochs < 1:
        raise UserError("--demo-adapt-epochs must be at least 1")
    stat = footage.stat()
    key = hashlib.sha256(
        "\x1f".join(
            map(
                str,
                (
                    VERSION,
                    footage.resolve(),
                    stat.st_size,
                    stat.st_mtime_ns,
                    seconds,
                    epochs,
                    args.demo_identities,
                    args.demo_epochs,
                ),
            )
        ).encode()
    ).hexdigest()[:12]
    camera = re.sub(r"[^A-Za-z0-9_-]", "-", footage.stem)[:40] or "camera"
    root = data_dir / "demo" / f"footage-{camera}-{key}"
    return FootageDemo(footage, root, camera, seconds, epochs)


def _command(argv: list[str]) -> int:
    """A ``sona`` command run in this process, its user errors raised (not printed)."""
    from .main import build_parser

    args = build_parser().parse_args(argv)
    return args.handler(args)


def _duration(plan: FootageDemo) -> list[str]:
    return [] if plan.seconds is None else ["--duration", f"{plan.seconds:g}"]


def adapt_demo(
    plan: FootageDemo, demo: Demo, log: Callable[[str], None], stage: Callable[..., None]
) -> Path:
    """The demo model adapted to the clip (made once, then reused): its checkpoint."""
    if plan.checkpoint.is_file():
        log(f"demo: serving the model adapted to {plan.footage} (kept in {plan.root})")
        return plan.checkpoint
    from model import load_checkpoint, save_checkpoint
    from training.adapt import adapt
    from training.tracks import load_tracks

    from .adapt_cmds import adapt_config

    if not (plan.tracks / "tracks.json").is_file():
        stage(f"finding the people of {plan.footage.name}")
        log(f"demo: finding and tracking the people of {plan.footage} (once)")
        partial = plan.root / "tracks.partial"  # a run cut short leaves no half training set
        shutil.rmtree(partial, ignore_errors=True)
        argv = ["footage", "export-training", str(plan.footage), "--output", str(partial)]
        _command([*argv, "--camera", plan.camera, "--quiet", *_duration(plan)])
        os.replace(partial, plan.tracks)
    tracks = load_tracks(plan.tracks).tracks
    if len(tracks) < 2:
        raise UserError(f"{plan.footage}: {len(tracks)} track found; adapting needs at least 2")
    stage(f"adapting the demo model to {plan.footage.name}", 0.0)
    log(f"demo: adapting the demo model to {len(tracks)} tracks, {plan.epochs} epochs (once)")

    def progress(line: str) -> None:
        log(f"demo: {line}")
        if found := ROUND.match(line):
            stage(f"adapting the demo model to {plan.footage.name}", int(found[1]) / int(found[2]))

    config = adapt_config(demo.checkpoint, plan.epochs, seed=0)
    result = adapt(demo.checkpoint, tracks, plan.root / "adapt", config, log=progress)
    net, meta = load_checkpoint(result.checkpoint)
    kept = save_checkpoint(
        plan.root / "adapt" / "demo-adapted.pt",
        net,
        **{
            **meta,
            "demo": True,
            "note": f"DEMO: trained on synthetic data, adapted to {plan.footage.name} "
            "without labels",
        },
    )
    os.replace(kept, plan.checkpoint)
    return plan.checkpoint


def index_footage(plan: FootageDemo, url: str, key: str | None) -> None:
    """The clip's tracks into gallery 'default' through the API; a restart resumes (or skips)
    from the run's state kept beside the gallery."""
    argv = ["footage", "add", str(plan.footage), "--camera", plan.camera, "--start", START]
    argv += ["--gallery", "default", "--url", url, "--state", str(plan.root / "index.jsonl")]
    argv += ["--quiet", *_duration(plan), *(["--api-key", key] if key else [])]
    _command(argv)
