"""Small training sets of tracks for the adaptation tests: made-up footage exported with its
true boxes (fast and exact), and a command runner that keeps stdout, stderr and the status."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np

from cli.main import main
from tests.footage_support import write_det, write_video


def sona(*args: str) -> subprocess.CompletedProcess:
    """``sona ARGS`` in this process: no interpreter and torch start per call."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def refused(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr, result.stderr


def exported_clip(root: Path, camera: str = "lobby", frames: int = 30) -> Path:
    """Two made-up walkers exported into ``root/set`` (6 crops a track); returns the folder."""
    video = write_video(root / f"{camera}.avi", frames=frames)
    det = write_det(root / f"{camera}.txt", frames=frames)
    out = root / "set"
    result = sona(
        "footage", "export-training", str(video), "--output", str(out), "--camera", camera,
        "--detections", str(det), "--crops-per-track", "6", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def person_crop(person: int, rng: np.random.Generator) -> np.ndarray:
    """A 'person' (a coarse random texture of its own) at 128x64 with noise and a shift."""
    texture = np.random.default_rng(100 + person).integers(0, 256, (12, 5, 3), dtype=np.uint8)
    image = cv2.resize(texture, (64, 128), interpolation=cv2.INTER_NEAREST).astype(np.int16)
    image = np.roll(image, int(rng.integers(-4, 5)), axis=0)
    image += rng.integers(-25, 26, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def made_up_tracks(
    root: Path, people: int = 4, appearances: int = 2, crops: int = 6, seconds: float = 8.0
) -> Path:
    """A training-set folder as export-training writes it: each person seen ``appearances``
    times, one after the other (track i from 10 i to 10 i + ``seconds``), one camera."""
    rng = np.random.default_rng(0)
    tracks = {}
    for i in range(people * appearances):
        name = f"{i + 1:04d}"
        (root / name).mkdir(parents=True)
        start = 10.0 * i
        entries = []
        for n in range(crops):
            t = round(start + seconds * n / max(crops - 1, 1), 3)
            file = f"{name}/{name}_c1s1_{round(t * 10):06d}_{n:02d}.jpg"
            cv2.imwrite(str(root / file), person_crop(i % people, rng))
            entries.append(
                {"file": file, "frame": round(t * 10), "seconds": t, "box": [0, 0, 64, 128]}
            )
        tracks[name] = {
            "camera": 1, "first": start, "last": start + seconds, "seen_first": start,
            "seen_last": start + seconds, "crops": entries,
        }  # fmt: skip
    camera = {"name": "made-up", "sources": ["made-up"], "fps": 10.0, "start": None}
    data = {"format": "sona-tracks", "version": 1, "cameras": {"1": camera}, "tracks": tracks}
    (root / "tracks.json").write_text(json.dumps(data))
    return root
