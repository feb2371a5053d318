"""Small training sets of tracks for the adaptation tests: made-up footage exported with its
true boxes (fast and exact), and a command runner that keeps stdout, stderr and the status."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

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
