"""What reading your own delete costs on a Milvus server, and what the other requests pay.

On the embedded Milvus standalone server (the ``milvus`` package), a gallery of ``--size``
1536-d items (HNSW, the server default) is searched by one store at Session:

* ``search``: plain searches, no delete in the last seconds;
* ``search at Strong``: the same searches asking for Strong (what every read after a delete
  used to pay for five seconds);
* ``delete, then search``: an item deleted, then a search for it at once (the store leaves
  the ids it deleted out of what it reads: the deleted item must not come back);
* ``get after delete``: a read by id of another item right after a delete.

Prints p50/p99 wall milliseconds and this process's CPU seconds per call (the server's CPU is
not counted). Run alone: only one embedded server can run on a machine.

    python bench/milvus_consistency.py --size 5000
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _support import milvus_server

from service.store import NewItem
from service.store.milvus import MilvusStore

DIM = 1536


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(label: str, calls: int, fn) -> None:
    walls, c0 = [], cpu()
    for i in range(calls):
        t = time.perf_counter()
        fn(i)
        walls.append(1000 * (time.perf_counter() - t))
    q = statistics.quantiles(walls, n=100)
    print(
        f"| {label} | {statistics.median(walls):.1f} | {q[98]:.1f} | "
        f"{1000 * (cpu() - c0) / calls:.1f} |",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=5000, help="items in the gallery (default 5000)")
    p.add_argument("--calls", type=int, default=40, help="timed calls per row (default 40)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.size, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    root = Path(tempfile.mkdtemp(prefix="sona-bench-"))
    try:
        with milvus_server() as (uri, _pid, version):
            store = MilvusStore(uri, dim=DIM, crops=root, collection_prefix="bench_consistency_")
            added = []
            for start in range(0, args.size, 500):
                items = [
                    NewItem(x[i], f"cam{i % 20}", t0 + timedelta(seconds=i), b"crop", "image/jpeg")
                    for i in range(start, min(start + 500, args.size))
                ]
                added += store.add("g", items)
            print(f"Milvus {version}, {args.size} items, HNSW, store at Session\n")
            print("| call | p50 ms | p99 ms | client CPU ms |\n|---|---:|---:|---:|")
            timed("search", args.calls, lambda i: store.search("g", x[i], 10))
            client = store.conn.client

            def strong(i: int) -> None:
                client.search(
                    store.collection,
                    data=[x[i]],
                    limit=10,
                    filter='gallery == "g"',
                    output_fields=["item_id"],
                    search_params=store.searcher.params(10),
                    consistency_level="Strong",
                )

            timed("search at Strong", args.calls, strong)

            def delete_then_search(i: int) -> None:
                victim = added[100 + i]
                store.delete(victim.item_id)
                hits = store.search("g", x[100 + i], 10)
                assert all(h.item.item_id != victim.item_id for h in hits)

            timed("delete, then search (both calls)", args.calls, delete_then_search)
            timed("get after delete", args.calls, lambda i: store.get(added[1000 + i].item_id))
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
