"""How long the demo on real footage takes to start: `sona demo --footage VIDEO` on an empty data
folder (the synthetic demo model trained, the video's tracks exported, the model adapted to
them, the video indexed), then started again on what the first start kept.

Prints, for each start, when each stage of the demo began, when the port answered, when
`/readyz` said ready and when the video's gallery was indexed (the demo's "ready" line), with
the wall time and the CPU time (user + system) of the whole `sona demo` process, and the
machine's load average.

    python bench/demo_footage.py                          # all of vtest.avi, the defaults
    python bench/demo_footage.py --seconds 20             # its first 20 s
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _support import free_port

from model.cpu import cpu_info

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
READY = "SONA DEMO ready"


def start(footage: Path, data: Path, seconds: float | None, log: Path) -> dict[str, float]:
    """One start, to the demo's ready line; the marks in seconds, and its CPU time."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sona = Path(sys.executable).parent / "sona"
    argv = [str(sona), "demo", "--footage", str(footage), "--port", str(port)]
    if seconds is not None:
        argv += ["--demo-footage-seconds", f"{seconds:g}"]
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, "SONA_DATA_DIR": str(data)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    marks: dict[str, float] = {}
    stages: dict[str, float] = {}  # each "demo: ..." line, when it first showed
    try:
        while READY not in (text := log.read_text(errors="replace")):
            for line in text.splitlines():
                if line.startswith("demo: ") and line not in stages:
                    stages[line] = time.perf_counter() - began
            if process.poll() is not None:
                raise SystemExit(f"sona demo exited: {log.read_text()[-2000:]}")
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            marks.setdefault("port answers", time.perf_counter() - began)
            if ready.status_code == 200:
                marks.setdefault("ready", time.perf_counter() - began)
            time.sleep(0.5)
        marks["searchable"] = time.perf_counter() - began
        marks["tracks"] = len(
            httpx.get(f"{url}/gallery/tracks", params={"gallery": "default"}, timeout=30).json()[
                "tracks"
            ]
        )
        marks["crops"] = httpx.get(f"{url}/gallery", timeout=30).json()["total"]
    finally:
        process.terminate()
        _, _, usage = os.wait4(process.pid, 0)
    marks["cpu"] = usage.ru_utime + usage.ru_stime
    for line, seconds in stages.items():
        print(f"  {seconds:6.1f} s  {line[:110]}")
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--footage", type=Path, default=VTEST, help="the video (default vtest)")
    parser.add_argument("--seconds", type=float, help="only its first SECONDS (default: all)")
    args = parser.parse_args()
    if not args.footage.is_file():
        raise SystemExit(f"{args.footage}: no such file (Debian: apt-get install opencv-doc)")
    data = Path(tempfile.mkdtemp(prefix="sona-demo-footage-"))
    print(f"{os.cpu_count()} CPUs, {cpu_info().describe()}; {args.footage}")
    for name in ("first start", "second start"):
        load = os.getloadavg()[0]
        marks = start(args.footage, data, args.seconds, data / f"{name.split()[0]}.log")
        print(
            f"{name}: port {marks.get('port answers', 0):.1f} s, ready {marks.get('ready', 0):.1f} "
            f"s, gallery indexed {marks['searchable']:.1f} s wall, {marks['cpu']:.1f} s CPU "
            f"(user + system); {marks['tracks']:.0f} tracks, {marks['crops']:.0f} crops; load "
            f"average {load:.1f} at its start"
        )
    print(f"(logs and what was built in {data})")


if __name__ == "__main__":
    main()
