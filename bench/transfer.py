"""Bulk import: `sona gallery import` of one archive into each store, side by side.

    python bench/transfer.py --items 100000 --milvus-server

One archive of ``--items`` items (1536-d low-rank vectors as in bench/search.py, 20 cameras,
a day of timestamps, a small real JPEG per item) is exported from the embedded store, then
imported (``service.transfer.import_gallery``, what the CLI runs) into a fresh embedded store
and into a Milvus server, once per ``--milvus-workers`` setting (inserts in flight). For each:
items/s and this process's CPU seconds. For the server also: recall@10 against exact of
unfiltered, one-camera and one-hour searches right after the inserts (nothing sealed) and
again after ``seal`` (what the import itself ends with), and how long the seal took.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from _support import cpu_seconds, milvus_server
from search import DAY_S, clustered, fill, recall, stats, timed_queries, top_k

from service.store import FaissSqliteStore, SearchFilter
from service.transfer import export_gallery, import_gallery

DIM = 1536
K = 10
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def jpegs(count: int) -> list[bytes]:
    """``count`` distinct small JPEG crops (128 x 64 noise over a gradient, 3-5 KB each)."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 200, 128, dtype=np.float32)[:, None, None]
    out = []
    for _ in range(count):
        img = np.clip(ramp + rng.normal(0, 25, (128, 64, 3)), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    return out


def make_archive(folder: Path, data: np.ndarray) -> tuple[Path, dict[str, int]]:
    """The source gallery in the embedded store, exported; returns the archive and each
    item's row in ``data``."""
    with FaissSqliteStore(folder / "source", dim=DIM) as src:
        _, position = fill(src, len(data), data, BASE, gallery="site", crops=jpegs(500))
        archive = export_gallery(src, "site", folder / "site.tar").path
    shutil.rmtree(folder / "source")
    return archive, position


def timed_import(store, archive: Path) -> tuple[float, float]:
    """items/s of the import (its seal included) and this process's CPU seconds."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = import_gallery(store, archive)
    wall = time.perf_counter() - t0
    return (result.added + result.skipped) / wall, time.process_time() - cpu0


def recalls(store, position: dict[str, int], data: np.ndarray, queries: np.ndarray, budget: float):
    """p50 ms and recall@10 of unfiltered, one-camera and one-hour searches."""
    n = len(data)
    seconds = np.arange(n) * (DAY_S / n)
    hour = (10 * 3600.0, 11 * 3600.0)
    cases = [
        (None, None),
        (SearchFilter(cameras=frozenset({"c3"})), np.flatnonzero(np.arange(n) % 20 == 3)),
        (
            SearchFilter(
                since=BASE + timedelta(seconds=hour[0]), until=BASE + timedelta(seconds=hour[1])
            ),
            np.flatnonzero((seconds >= hour[0]) & (seconds <= hour[1])),
        ),
    ]
    out = []
    for where, allowed in cases:
        truth = top_k(data, queries, K, allowed)
        found, took = timed_queries(
            lambda q, w=where: np.array(
                [position[h.item.item_id] for h in store.search("site", q[0], K, w)]
            ),
            queries,
            budget,
        )
        out += [stats(took)[0], recall(found, truth)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--time", type=float, default=10.0, help="seconds of queries per case")
    parser.add_argument("--milvus-server", action="store_true", help="start the embedded one")
    parser.add_argument("--milvus-uri", help="a running Milvus server instead")
    parser.add_argument("--milvus-index", default="HNSW")
    parser.add_argument(
        "--milvus-workers", default="1,4", help="inserts in flight, one import per value"
    )
    parser.add_argument("--milvus-batch", type=int, default=2000, help="rows per insert")
    parser.add_argument("--tmp", default=None, help="where the stores' data go")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = clustered(args.items + args.queries, rng, rank=64)
    data, queries = data[: args.items], data[args.items :]
    with contextlib.ExitStack() as stack:
        server_pid = None
        if args.milvus_server:
            args.milvus_uri, server_pid, _ = stack.enter_context(
                milvus_server(Path(args.tmp) if args.tmp else None)
            )
        folder = Path(tempfile.mkdtemp(prefix="sona-bench-transfer-", dir=args.tmp))
        stack.callback(shutil.rmtree, folder, True)
        began = time.perf_counter()
        archive, position = make_archive(folder, data)
        size = os.path.getsize(archive) / 2**20
        print(
            f"{args.items:,} items, archive {size:,.0f} MiB (made in "
            f"{time.perf_counter() - began:.0f} s); {os.cpu_count()} CPUs",
            flush=True,
        )
        print("| store | import items/s | CPU s (importer) | CPU s (server) | seal s |")
        print("|---|---:|---:|---:|---:|")
        with FaissSqliteStore(folder / "faiss", dim=DIM) as dst:
            rate, cpu = timed_import(dst, archive)
            print(f"| FAISS + SQLite | {rate:,.0f} | {cpu:.0f} | - | - |", flush=True)
            embedded = recalls(dst, position, data, queries, args.time)
        shutil.rmtree(folder / "faiss")
        rows = [("FAISS + SQLite", "-", embedded)]
        if args.milvus_uri:
            from pymilvus import MilvusClient

            from service.store.milvus import MilvusStore

            for workers in (int(w) for w in args.milvus_workers.split(",")):
                prefix = f"bench_import_{uuid.uuid4().hex[:8]}_"
                store = MilvusStore(
                    args.milvus_uri,
                    dim=DIM,
                    collection_prefix=prefix,
                    crops=folder / prefix,
                    index=args.milvus_index,
                )
                store.import_workers, store.import_batch = workers, args.milvus_batch
                real_seal = store.seal
                store.seal = lambda timeout=600.0: True  # measure before sealing first
                server0 = cpu_seconds(server_pid) if server_pid else float("nan")
                cpu0, t0 = time.process_time(), time.perf_counter()
                import_gallery(store, archive)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                server = (cpu_seconds(server_pid) if server_pid else float("nan")) - server0
                before = recalls(store, position, data, queries, args.time)
                t1 = time.perf_counter()
                real_seal()
                sealing = time.perf_counter() - t1
                after = recalls(store, position, data, queries, args.time)
                label = f"Milvus {args.milvus_index}, {workers} in flight x {args.milvus_batch}"
                print(
                    f"| {label} | {args.items / wall:,.0f} (with the seal: "
                    f"{args.items / (wall + sealing):,.0f}) | {cpu:.0f} | {server:.0f} | "
                    f"{sealing:.0f} |",
                    flush=True,
                )
                rows += [(label, "right after the inserts", before), (label, "sealed", after)]
                store.close()
                MilvusClient(uri=args.milvus_uri).drop_collection(store.collection)
                shutil.rmtree(folder / prefix, ignore_errors=True)
        print(
            "\n| store | when | p50 ms | recall@10 | 1 camera p50 | recall@10 "
            "| 1 hour p50 | recall@10 |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for label, when, r in rows:
            print(
                f"| {label} | {when} | {r[0]:.2f} | {r[1]:.3f} | {r[2]:.2f} | {r[3]:.3f} | "
                f"{r[4]:.2f} | {r[5]:.3f} |"
            )


if __name__ == "__main__":
    main()
