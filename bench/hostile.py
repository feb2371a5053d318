"""Decompression amplifiers against a real ``sona serve``: peak memory, CPU and answers.

Each request carries a few 4000 x 4000 grey PNGs (about 21 KB each on the wire, 16 million
pixels decoded); several clients send such requests at once. Prints the server's peak resident
memory (VmHWM) before and after, its CPU seconds, the wall time and the answers.

    python bench/hostile.py --clients 8 --images 4
    # another tree's server, e.g. an older checkout (its own `python -m <module> serve`):
    cd OLD && PYTHONPATH=. python NEW/bench/hostile.py --serve "python -m training.cli serve"
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _support import random_checkpoint, served
from PIL import Image

from model.cpu import cpu_info


def status_of(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--images", type=int, default=4, help="PNGs per request")
    parser.add_argument("--side", type=int, default=4000)
    parser.add_argument("--serve", help="the server command (default: this tree's sona serve)")
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.new("L", (args.side, args.side), 128).save(buffer, "PNG", optimize=True)
    png = buffer.getvalue()
    command = shlex.split(args.serve) if args.serve else None
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = random_checkpoint(Path(tmp) / "m.pt")
        with served(checkpoint, Path(tmp) / "data", command, SONA_DEVICE="cpu") as (url, pid):
            form = {"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z"}
            with httpx.Client(base_url=url, timeout=600) as c:  # warm up with a real crop
                small = io.BytesIO()
                Image.new("RGB", (64, 128), (90, 30, 40)).save(small, "JPEG")
                c.post("/gallery", files={"images": ("w.jpg", small.getvalue())}, data=form)
            rss0, hwm0, cpu0 = status_of(pid, "VmRSS:"), status_of(pid, "VmHWM:"), cpu_seconds(pid)
            answers: list[int] = []

            def send() -> None:
                files = [("images", (f"{i}.png", png, "image/png")) for i in range(args.images)]
                with httpx.Client(base_url=url, timeout=600) as c:
                    answers.append(c.post("/gallery", files=files, data=form).status_code)

            start = time.perf_counter()
            threads = [threading.Thread(target=send) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            hwm1, rss1, cpu1 = status_of(pid, "VmHWM:"), status_of(pid, "VmRSS:"), cpu_seconds(pid)
    per_request = len(png) * args.images / 1024
    print(
        f"{args.clients} clients x 1 request of {args.images} {args.side}x{args.side} grey PNGs "
        f"({per_request:.0f} KiB on the wire a request), {os.cpu_count()} CPUs, "
        f"{cpu_info().describe()}\n"
    )
    print(
        "| peak RSS before | peak RSS after | growth | RSS after | server CPU s | wall s "
        "| answers |"
    )
    print("|---|---|---|---|---|---|---|")
    counts = {s: answers.count(s) for s in sorted(set(answers))}
    print(
        f"| {hwm0:.0f} MiB | {hwm1:.0f} MiB | {hwm1 - hwm0:+.0f} MiB | {rss1:.0f} MiB "
        f"(from {rss0:.0f}) | {cpu1 - cpu0:.1f} | {wall:.1f} | {counts} |"
    )


if __name__ == "__main__":
    main()
