"""Mixed load against a real ``sona serve``: errors, lost writes and server memory over time.

Many concurrent clients embed, ingest, search (by query, item and image) and delete for a
bounded time. At the end every acknowledged, undeleted item must still be there; the server's
resident memory is sampled every second (from /proc) to show whether it stays flat.

    python bench/soak.py --seconds 120 --clients 16
    SONA_CHECKPOINT=runs/tiny/last.pt python bench/soak.py   # a trained model instead
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
from _support import crop_jpegs, random_checkpoint, served

from model.cpu import cpu_info

CROPS: list[bytes] = []  # synthetic pedestrian crops, made once in main()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(
    url: str, stop: float, seed: int, stats: dict, acked: dict, deleted: set, max_items: int
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while time.monotonic() < stop:
            action = rng.choices(
                ["embed", "ingest", "counts", "search_item", "post_search", "delete"],
                weights=[4, 3, 1, 3, 2, 1],
            )[0]
            if action == "ingest" and max_items and len(acked) - len(deleted) >= max_items:
                action = "delete"  # a steady gallery: memory growth is then not the data's
            start = time.perf_counter()
            image = rng.choice(CROPS)
            if action == "embed":
                r = await http.post("/embed", files={"image": ("q.jpg", image, "image/jpeg")})
                if r.status_code == 200:
                    q = r.json()["query_id"]
                    r = await http.get("/search", params={"query_id": q, "k": 10})
                    if r.status_code == 404 and not acked:  # no gallery yet
                        r = httpx.Response(200)
            elif action == "ingest":
                n = rng.randint(1, 4)
                r = await http.post(
                    "/gallery",
                    files=[
                        ("images", ("c.jpg", rng.choice(CROPS), "image/jpeg")) for _ in range(n)
                    ],
                    data={
                        "camera_id": f"cam{rng.randrange(8)}",
                        "timestamp": "2024-05-01T12:00:00Z",
                    },
                )
                if r.status_code == 201:
                    for item in r.json()["items"]:
                        acked[item["item_id"]] = item
            elif action == "search_item" and acked:
                item_id = rng.choice(list(acked))
                r = await http.get("/search", params={"item_id": item_id, "k": 10})
                if r.status_code == 404 and item_id in deleted:
                    r = httpx.Response(200)  # deleted meanwhile by another client: expected
            elif action == "post_search":
                r = await http.post(
                    "/search",
                    params={"k": 10, "group_by": "identity"},
                    files={"image": ("q.jpg", image, "image/jpeg")},
                )
                if r.status_code == 404:  # no gallery yet
                    r = httpx.Response(200)
            elif action == "delete" and len(acked) > 20:
                item_id = rng.choice(list(acked))
                if item_id in deleted:
                    continue
                deleted.add(item_id)
                r = await http.delete(f"/gallery/{item_id}")
                if r.status_code == 404:
                    r = httpx.Response(204)  # another client deleted it first
            else:
                r = await http.get("/gallery")
                action = "counts"  # also where search_item or delete had nothing to act on
            stats[action].append((time.perf_counter() - start, r.status_code))


async def soak(url: str, seconds: float, clients: int, pid: int, max_items: int = 0) -> dict:
    stats: dict[str, list] = defaultdict(list)
    acked: dict[str, dict] = {}
    deleted: set[str] = set()
    memory = [rss_mib(pid)]
    stop = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(1)
            memory.append(rss_mib(pid))

    await asyncio.gather(
        sample(),
        *(client(url, stop, i, stats, acked, deleted, max_items) for i in range(clients)),
    )
    lost = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for item_id, item in acked.items():
            r = await http.get(f"/gallery/{item_id}")
            if item_id in deleted:
                if r.status_code != 404:
                    lost.append(f"{item_id} deleted but still there")
            elif r.status_code != 200 or r.json() != item:
                lost.append(f"{item_id}: {r.status_code}")
    return {
        "stats": stats,
        "acked": len(acked),
        "deleted": len(deleted),
        "lost": lost,
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--max-items",
        type=int,
        default=0,
        help="keep the gallery at about this many items (deletes instead of ingests past it), "
        "so memory that still grows is not the gallery's; 0: let it grow",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        CROPS[:] = crop_jpegs(root / "crops", 200)
        checkpoint = os.environ.get("SONA_CHECKPOINT") or random_checkpoint(root / "tiny.pt")
        with served(Path(checkpoint), root / "data") as (url, pid):
            result = asyncio.run(soak(url, args.seconds, args.clients, pid, args.max_items))
    print(
        f"{args.clients} clients for {args.seconds:.0f} s against sona serve on 127.0.0.1 "
        f"({os.cpu_count()} CPUs, {cpu_info().describe()})\n"
    )
    print("| request | count | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    total = errors = 0
    for action, rows in sorted(result["stats"].items()):
        times = sorted(t for t, _ in rows)
        bad = sum(1 for _, status in rows if status >= 400)
        total, errors = total + len(rows), errors + bad
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(
            f"| {action} | {len(rows)} | {bad} | {statistics.median(times) * 1000:.1f} | "
            f"{p99 * 1000:.1f} |"
        )
    memory = result["memory"]
    settle = memory[len(memory) // 4]
    lost = len(result["lost"])
    print(
        f"\nrequests {total} ({total / args.seconds:.1f}/s), errors {errors}, items "
        f"acknowledged {result['acked']}, deleted {result['deleted']}, lost {lost}"
    )
    print(
        f"server RSS: start {memory[0]:.0f} MiB, after a quarter {settle:.0f} MiB, "
        f"end {memory[-1]:.0f} MiB, max {max(memory):.0f} MiB "
        f"(growth after the first quarter {memory[-1] - settle:+.0f} MiB)"
    )
    tenths = [memory[min(len(memory) - 1, i * len(memory) // 10)] for i in range(1, 11)]
    print("server RSS at each tenth of the run (MiB): " + ", ".join(f"{m:.0f}" for m in tenths))
    for line in result["lost"][:10]:
        print("  LOST", line)
    sys.exit(1 if errors or result["lost"] else 0)


if __name__ == "__main__":
    main()
