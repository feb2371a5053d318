"""The service end to end: throughput and latency at rising concurrency, micro-batching on vs off.

Starts a real ``sona serve`` on 127.0.0.1 twice with the same checkpoint: once with dynamic
micro-batching (``SONA_MAX_BATCH_SIZE=32``, ``SONA_MAX_WAIT_MS=5``) and once without
(batch size 1, no wait), and drives ``POST /embed``, ``POST /gallery`` and ``GET /search`` from
1 to 64 concurrent async clients, a bounded number of requests per level after a warm-up.
Prints one table with both runs side by side and the ratio.

    python bench/service.py --requests 96
    SONA_CHECKPOINT=runs/tiny/last.pt python bench/service.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import crop_jpegs, random_checkpoint, served
from service.sona_client import SonaClient

MODES = {
    "batched": {"SONA_MAX_BATCH_SIZE": "32", "SONA_MAX_WAIT_MS": "5"},
    "unbatched": {"SONA_MAX_BATCH_SIZE": "1", "SONA_MAX_WAIT_MS": "0"},
}


CROPS: list[bytes] = []  # 48 synthetic pedestrian crops: 16 to send, 32 to seed the gallery


async def level(url: str, route: str, concurrency: int, requests: int) -> tuple[float, ...]:
    images = CROPS[:16]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            start = time.perf_counter()
            if route == "embed":
                r = await http.post(
                    "/embed", files={"image": ("q.jpg", images[i % 16], "image/jpeg")}
                )
            elif route == "gallery":
                r = await http.post(
                    "/gallery",
                    params={"gallery": "bench"},
                    files={"images": ("c.jpg", images[i % 16], "image/jpeg")},
                    data={"camera_id": "c1", "timestamp": "2024-05-01T12:00:00Z"},
                )
            else:
                r = await http.get(
                    "/search", params={"item_id": SEED_ITEMS[i % len(SEED_ITEMS)], "k": 10}
                )
            latencies.append(time.perf_counter() - start)
            errors += r.status_code >= 400

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return requests / wall, statistics.median(ordered) * 1000, p99 * 1000, errors


SEED_ITEMS: list[str] = []


def run_mode(checkpoint: Path, env: dict[str, str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp, served(checkpoint, Path(tmp) / "data", **env) as r:
        url = r[0]
        with SonaClient(url) as sona:  # a gallery to search
            items = sona.add(
                [(f"{i}.jpg", CROPS[16 + i]) for i in range(32)],
                camera_id="c0",
                timestamp="2024-05-01T11:00:00Z",
            )
            SEED_ITEMS[:] = [item.item_id for item in items]
        results = {}
        for route in args.routes.split(","):  # warm-up: the first requests run slower
            asyncio.run(level(url, route, 8, 64))
        for route in args.routes.split(","):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                results[(route, concurrency)] = asyncio.run(
                    level(url, route, concurrency, args.requests)
                )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per level")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--routes", default="embed,gallery,search")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        CROPS[:] = crop_jpegs(Path(tmp) / "crops", 48)
        checkpoint = Path(
            os.environ.get("SONA_CHECKPOINT") or random_checkpoint(Path(tmp) / "m.pt")
        )
        runs = {mode: run_mode(checkpoint, env, args) for mode, env in MODES.items()}
    print(
        f"sona serve on 127.0.0.1, {os.cpu_count()} CPUs, {args.requests} requests per level, "
        f"checkpoint {'SONA_CHECKPOINT' if os.environ.get('SONA_CHECKPOINT') else 'tiny'}\n"
    )
    print(
        "| route | clients | batched req/s | p50 ms | p99 ms | unbatched req/s | p50 ms | "
        "p99 ms | throughput ratio | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, (rps, p50, p99, err) in runs["batched"].items():
        urps, up50, up99, uerr = runs["unbatched"][key]
        print(
            f"| {key[0]} | {key[1]} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {urps:.1f} | "
            f"{up50:.1f} | {up99:.1f} | {rps / urps:.2f}x | {err + uerr} |"
        )


if __name__ == "__main__":
    main()
