"""What the service benchmarks share: a model to serve, crops to send, a server to drive.

Kept apart from the tests on purpose: a benchmark measures, it does not depend on test code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["crop_jpegs", "random_checkpoint", "served"]


def random_checkpoint(path: Path) -> Path:
    """An untrained tiny SONA-Net: what a benchmark of the serving path needs, no training."""
    from model import PRESETS, SONANet, save_checkpoint

    return save_checkpoint(path, SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0)))


def crop_jpegs(folder: Path, count: int) -> list[bytes]:
    """``count`` JPEG pedestrian crops from a small seeded synthetic set made in ``folder``."""
    from training.synthetic import make_dataset

    make_dataset(folder, identities=max(4, count // 6), cameras=3, seed=0, overwrite=True)
    files = sorted((folder / "bounding_box_test").glob("*.jpg"))
    data = [f.read_bytes() for f in files]
    return [data[i % len(data)] for i in range(count)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(
    checkpoint: Path, data_dir: Path, command: list[str] | None = None, **env: str
) -> Iterator[tuple[str, int]]:
    """``sona serve`` (or ``command``, which takes ``--port``) on 127.0.0.1 until the block
    ends: yields (url, pid)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"SONA_CHECKPOINT": str(checkpoint), "SONA_DATA_DIR": str(data_dir), **env}
    log = data_dir.parent / f"sona-serve-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [
                *(command or [str(Path(sys.executable).parent / "sona"), "serve"]),
                "--port",
                str(port),
            ],
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"sona serve exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("sona serve did not become ready in 120 s")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
