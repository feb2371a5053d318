"""A video file played as a live camera: FFmpeg sends it in real time, looped, as MPEG-TS over
UDP, which ``sona footage add udp://...`` reads like any stream. For trying out live
indexing without a camera, and for the tests and the benchmark of it (needs the ``ffmpeg``
program)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

__all__ = ["free_udp_port", "replay"]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody on ``host`` listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def replay(video: Path, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """``ffmpeg`` sending ``video`` to ``udp://host:port`` at its own rate (``-re``), looped,
    as MPEG-2 with a key frame every 10 frames, so that a receiver can start anywhere; stop it
    with ``terminate()``. Its messages are dropped."""
    return subprocess.Popen(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(video),
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-g",
            "10",
            "-f",
            "mpegts",
            f"udp://{host}:{port}?pkt_size=1316",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
