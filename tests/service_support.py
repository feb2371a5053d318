"""Running real ``sona serve`` processes on 127.0.0.1 for the service tests."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from model import PRESETS, SONANet, save_checkpoint

SONA = str(Path(sys.executable).parent / "sona")


def make_checkpoint(path: Path, seed: int = 0, **meta: object) -> Path:
    """A small random SONA-Net (tiny preset) with BatchNorm statistics off their defaults;
    ``meta`` goes into the checkpoint (``demo=True`` labels it as the demo is)."""
    torch.manual_seed(seed)
    net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return save_checkpoint(path, net.eval(), **meta)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(seed: int = 0, size: tuple[int, int] = (128, 64), fmt: str = "JPEG") -> bytes:
    """A pedestrian-sized picture with structure (not flat noise), as encoded bytes."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(0, 256, (4, 2, 3), dtype=np.uint8)
    pixels = np.kron(base, np.ones((h // 4, w // 2, 1), dtype=np.uint8))
    pixels = (pixels + rng.integers(0, 30, pixels.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


class Server:
    """A ``sona serve`` subprocess; ``kill()`` is SIGKILL, ``stop()`` SIGTERM. Its log goes
    beside ``data_dir`` unless ``log_dir`` is given (a disk under test must not hold it)."""

    def __init__(
        self,
        checkpoint: Path,
        data_dir: Path,
        log_dir: Path | None = None,
        log_level: str = "warning",
        args: tuple[str, ...] = (),
        verify: ssl.SSLContext | bool = True,
        **env: str,
    ) -> None:
        """``args``: more ``sona serve`` options; ``--ssl-certfile`` among them makes the URL
        https, checked against ``verify`` (an SSL context trusting its certificate)."""
        self.log_level = log_level
        self.args = tuple(args)
        self.verify = verify
        self.port = free_port()
        scheme = "https" if "--ssl-certfile" in self.args else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SONA_CHECKPOINT": str(checkpoint),
            "SONA_DATA_DIR": str(data_dir),
            "SONA_DEVICE": "cpu",
            "SONA_AMP": "false",  # fp32: vectors comparable exactly with model.embed
            **env,
        }
        self.log = (log_dir or data_dir.parent) / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SONA,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    self.log_level,
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2, verify=self.verify)
                if ready.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=60)
        return self.process.returncode if self.process else 0

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 60, "verify": self.verify, **kwargs})


def serve_fails(**env: str) -> str:
    """``sona serve`` that must stop before listening: its one-line reason."""
    result = subprocess.run(
        [SONA, "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr
