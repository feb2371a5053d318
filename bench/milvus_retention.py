"""Removing a day of a gallery on a Milvus server: a partition drop against deletes by id.

On the embedded Milvus standalone server (the ``milvus`` package), for each size N a gallery
holds N items of one day (1536-d, HNSW, a small JPEG-sized crop each) and the next day's
``--keep`` items. ``expire`` with the cutoff at the end of the first day removes that day:

* ``day partitions``: a collection of the current layout (a partition per gallery and UTC
  day; crops in a folder per day): one partition drop and one folder removal;
* ``gallery partition key``: a collection made before day partitions: the store queries
  1,000 ids at a time, deletes them by id and unlinks their crops one by one.

Prints, per layout and size, the wall seconds of the removal, this process's CPU seconds and
the server's, and checks that exactly the day went (items and crop files). Run alone: only
one embedded server can run on a machine.

    python bench/milvus_retention.py --sizes 2000,10000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _support import cpu_seconds, milvus_server

from service.store import NewItem
from service.store.milvus import MilvusStore
from service.store.milvus.collection import schema

DIM = 1536
DAY = datetime(2024, 5, 1, tzinfo=UTC)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def crop_count(root: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(root))


def fill(store: MilvusStore, n: int, keep: int, rng: np.random.Generator) -> None:
    crop = os.urandom(6000)  # about a 128 x 64 JPEG crop
    total = n + keep
    for start in range(0, total, 1000):
        stop = min(start + 1000, total)
        x = rng.standard_normal((stop - start, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        items = []
        for j, i in enumerate(range(start, stop)):
            # the day's items spread over its 24 hours, then the next day's
            when = DAY + timedelta(seconds=86_399 * i / n) if i < n else DAY + timedelta(days=1)
            items.append(NewItem(x[j], f"cam{i % 20}", when, crop, "image/jpeg"))
        store.add("g", items)


def run(uri: str, pid: int, root: Path, n: int, keep: int, legacy: bool) -> str:
    prefix = f"bench_ret_{'key' if legacy else 'days'}_{n}_"
    crops = root / prefix
    if legacy:
        s = MilvusStore(uri, dim=DIM, crops=crops, collection_prefix=prefix)
        s.conn.client.drop_collection(s.collection)
        s.conn.client.create_collection(
            s.collection, schema=schema(DIM, gallery_partition_key=True)
        )
        s.close()
    store = MilvusStore(uri, dim=DIM, crops=crops, collection_prefix=prefix)
    assert store.day_partitions is not legacy
    fill(store, n, keep, np.random.default_rng(n))
    assert store.count("g") == n + keep and crop_count(crops) == n + keep
    wall, mine, server = time.perf_counter(), cpu(), cpu_seconds(pid)
    removed = store.expire(DAY + timedelta(days=1), "g")
    wall, mine = time.perf_counter() - wall, cpu() - mine
    server = cpu_seconds(pid) - server
    assert removed == n, removed
    assert store.count("g") == keep and crop_count(crops) == keep
    store.conn.client.drop_collection(store.collection)
    store.close()
    layout = "gallery partition key (ids)" if legacy else "day partitions (drop)"
    return f"| {layout} | {n} | {wall:.2f} | {mine:.2f} | {server:.2f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--sizes", default="2000,10000", help="items in the day removed (default 2000,10000)"
    )
    p.add_argument("--keep", type=int, default=500, help="items of the next day (default 500)")
    args = p.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="sona-bench-"))
    try:
        with milvus_server() as (uri, pid, version):
            print(f"Milvus {version}, 1536-d, HNSW; one day of N items removed by expire\n")
            print(
                "| layout | N | wall s | client CPU s | server CPU s |\n|---|---:|---:|---:|---:|"
            )
            for n in sizes:
                for legacy in (False, True):
                    print(run(uri, pid, root, n, args.keep, legacy), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
