"""How long a fresh clone's `make serve` takes to a searchable demo, and how good the demo is.

Starts `sona serve` without a checkpoint on an empty data folder, as `make serve` does on a
fresh clone (the virtualenv already installed), and prints when the port answered, when
`/readyz` said ready and when the demo gallery was fully indexed; then the demo model's
rank-1 and mAP on its synthetic test split.

    python bench/demo_start.py                    # the default demo
    SONA_DEMO_EPOCHS=40 python bench/demo_start.py
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

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help only
    data = Path(tempfile.mkdtemp(prefix="sona-demo-start-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sona = Path(sys.executable).parent / "sona"
    start = time.perf_counter()
    log = (data / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(sona), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "SONA_DATA_DIR": str(data), "SONA_CHECKPOINT": ""},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    marks: dict[str, float] = {}
    last, steady = -1, 0
    try:
        while steady < 4:
            if process.poll() is not None:
                raise SystemExit(f"sona serve exited: {(data / 'serve.log').read_text()[-2000:]}")
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            marks.setdefault("port answers", time.perf_counter() - start)
            if ready.status_code == 200:
                marks.setdefault("ready", time.perf_counter() - start)
                total = httpx.get(f"{url}/gallery", timeout=5).json()["total"]
                steady = steady + 1 if total == last and total > 0 else 0
                if steady == 1:
                    marks["searchable"] = time.perf_counter() - start
                    items = total
                last = total
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=60)
    for name, seconds in marks.items():
        print(f"{name:<14} {seconds:6.1f} s")
    print(f"({items} gallery crops indexed; {os.cpu_count()} CPUs, {cpu_info().describe()})")

    import torch

    from model import load_checkpoint
    from training.datasets import load_dataset
    from training.features import evaluate_net

    net, _ = load_checkpoint(data / "demo" / "demo.pt")
    metrics = evaluate_net(
        net, load_dataset("synthetic", data / "demo" / "synthetic"), torch.device("cpu")
    )
    print(f"demo model: rank-1 {metrics.rank1:.1%}, mAP {metrics.mAP:.1%} (cosine)")


if __name__ == "__main__":
    main()
