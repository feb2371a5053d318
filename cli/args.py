"""Argument types shared by the command groups (each turns text into a value or says why not),
and where a command finds a file the service keeps."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["batch_shape", "block_size", "hw", "points", "positive", "service_file", "stages"]


def hw(text: str) -> tuple[int, int]:
    """``384x128`` -> (384, 128): the one parser of HEIGHTxWIDTH sizes."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 384x128, got {text!r}"
        ) from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HEIGHTxWIDTH, got {text!r}")
    return height, width


def stages(text: str) -> tuple[int, ...]:
    """``2,3``, ``2+3`` or ``none`` -> SONA stages."""
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.replace("+", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected stages such as 2,3 or none, got {text!r}"
        ) from None


def block_size(text: str) -> tuple[int, int]:
    """``5x8`` -> (5, 8); ``5`` -> (5, 5)."""
    if text.strip().isdigit():
        side = int(text)
        if side < 1:
            raise argparse.ArgumentTypeError(f"block size must be positive, got {text!r}")
        return side, side
    return hw(text)


def batch_shape(text: str) -> tuple[int, int]:
    """``32x4`` -> (identities, images per identity)."""
    try:
        p, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PxK such as 32x4, got {text!r}") from None
    return p, k


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def points(text: str) -> list[tuple[float, float]]:
    """``40,32;200,64`` -> [(40.0, 32.0), (200.0, 64.0)]: row,col pixel pairs."""
    try:
        pairs = [p for p in text.replace(" ", "").split(";") if p]
        found = [tuple(float(v) for v in p.split(",")) for p in pairs]
    except ValueError:
        found = []
    if not found or any(len(p) != 2 for p in found):
        raise argparse.ArgumentTypeError(
            f"expected row,col pixel pairs separated by ';' such as '40,32;200,64', got {text!r}"
        )
    return found  # type: ignore[return-value]


def service_file(explicit: str | None, env: str, data_dir: str | None, name: str) -> Path:
    """A file of the service's: the option, else the ``env`` variable, else ``name`` in the
    data folder (``--data-dir``, else SONA_DATA_DIR, else ./data), as ``sona serve`` finds it."""
    if explicit:
        return Path(explicit)
    if os.environ.get(env, "").strip():
        return Path(os.environ[env])
    folder = data_dir or os.environ.get("SONA_DATA_DIR", "").strip() or "data"
    return Path(folder) / name
