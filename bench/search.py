"""Gallery search at 10k to 1M 1536-d vectors: indexes, filters, and the two store backends.

Vectors are clustered like re-ID embeddings (identities with several views each), unit length.
For each size it prints, side by side in one run:

* indexes: numpy brute force (the baseline), FAISS Flat (exact), HNSW32, IVF,Flat and IVF,PQ:
  build time, memory, p50/p99 latency of single queries, queries/s, recall@10 against exact;
* filtered search on Flat (one camera of 8, a 10% time window) through an IDSelector:
  latency and whether the top 10 is exactly the brute-force top 10 of the items that pass;
* stores (``--stores``): the service's FAISS + SQLite store and the Milvus store (Milvus Lite)
  at the same size: ingest rate, search p50/p99 with and without a camera filter, exactness.

    python bench/search.py --sizes 10000,100000 --stores
    python bench/search.py --sizes 1000000          # needs ~7 GiB of RAM
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np

# the repository first: bench/service.py would otherwise shadow the service package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 1536
CAMERAS = 8


def clustered(n: int, rng: np.random.Generator, per_identity: int = 8) -> np.ndarray:
    """Unit vectors around n / per_identity identity centres (views of the same person)."""
    centres = rng.standard_normal((max(1, n // per_identity), DIM), dtype=np.float32)
    data = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        data[start:stop] = centres[np.arange(start, stop) % len(centres)] + 0.9 * noise
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def timed_queries(search, queries: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    results, times = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(search(q[None]))
        times.append(time.perf_counter() - start)
    return results, times


def stats(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1000, p99 * 1000, len(times) / sum(times)


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(
        np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)])
    )


def index_rows(n: int, data: np.ndarray, queries: np.ndarray) -> list[tuple]:
    rows = []

    def numpy_search(q: np.ndarray) -> np.ndarray:
        scores = data @ q[0]
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    truth, truth_times = timed_queries(numpy_search, queries)
    rows.append(("numpy brute force", 0.0, data.nbytes, *stats(truth_times), 1.0))
    nlist = max(64, int(4 * np.sqrt(n)))
    specs = [
        ("Flat", {}),
        ("HNSW32", {"efSearch": 128}),
        (f"IVF{nlist},Flat", {"nprobe": 32}),
        (f"IVF{nlist},PQ96", {"nprobe": 32}),
    ]
    for factory, params in specs:
        index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
        if "PQ" in factory:  # polysemous codes are for Hamming filtering, unused: 10x slower
            faiss.downcast_index(index).do_polysemous_training = False
        start = time.perf_counter()
        if not index.is_trained:
            sample = data[np.random.default_rng(1).choice(n, min(n, 40 * nlist), replace=False)]
            index.train(sample)
        index.add(data)
        build = time.perf_counter() - start
        ps = faiss.ParameterSpace()
        for key, value in params.items():
            ps.set_index_parameter(index, key, value)
        memory = len(faiss.serialize_index(index))
        found, times = timed_queries(lambda q, index=index: index.search(q, 10)[1][0], queries)
        label = factory + "".join(f" {k}={v}" for k, v in params.items())
        rows.append((label, build, memory, *stats(times), recall(found, truth)))
        del index
    return rows


def filter_rows(n: int, data: np.ndarray, queries: np.ndarray) -> list[tuple]:
    rng = np.random.default_rng(2)
    cameras = rng.integers(0, CAMERAS, n)
    times = np.arange(n)  # time order = insertion order
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(data, np.arange(n, dtype=np.int64))
    rows = []
    for label, allowed in [
        ("1 camera of 8", np.flatnonzero(cameras == 3)),
        ("10% time window", np.flatnonzero(times >= int(0.45 * n))[: n // 10]),
    ]:
        selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
        params = faiss.SearchParameters(sel=selector)
        found, took = timed_queries(
            lambda q, params=params: index.search(q, 10, params=params)[1][0], queries
        )
        exact = 0
        for q, f in zip(queries, found, strict=True):
            scores = data[allowed] @ q
            expected = allowed[np.argsort(-scores)[:10]]
            exact += int(list(f) == list(expected))
        rows.append((label, len(allowed), *stats(took), exact / len(queries)))
    return rows


def store_rows(
    n: int, data: np.ndarray, queries: np.ndarray, milvus: bool, count: int
) -> list[tuple]:
    queries = queries[:count]
    from service.store import FaissSqliteStore, NewItem, SearchFilter

    backends = [("FAISS + SQLite (Flat)", lambda root: FaissSqliteStore(root, dim=DIM))]
    if milvus:
        from service.store.milvus import MilvusStore

        backends.append(
            ("Milvus Lite (FLAT)", lambda root: MilvusStore(str(root / "milvus.db"), dim=DIM))
        )
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for label, make in backends:
        root = Path(tempfile.mkdtemp(prefix="sona-bench-"))
        try:
            store = make(root)
            start = time.perf_counter()
            for chunk in range(0, n, 1000):
                store.add(
                    "bench",
                    [
                        NewItem(
                            embedding=data[i],
                            camera_id=f"c{i % CAMERAS}",
                            timestamp=base + timedelta(seconds=i),
                            image=b"\xff\xd8\xff",
                            image_type="image/jpeg",
                        )
                        for i in range(chunk, min(n, chunk + 1000))
                    ],
                )
            ingest = n / (time.perf_counter() - start)
            camera = SearchFilter(cameras=frozenset({"c3"}))
            plain, t_plain = timed_queries(
                lambda q, store=store: store.search("bench", q[0], 10), queries
            )
            _, t_cam = timed_queries(
                lambda q, store=store, camera=camera: store.search("bench", q[0], 10, camera),
                queries,
            )
            exact = 0
            for q, hits in zip(queries, plain, strict=True):
                best = np.sort(data @ q)[::-1][:10]  # ids differ per store: compare the scores
                exact += int(np.allclose([h.score for h in hits], best, atol=1e-5))
            p50, p99, _ = stats(t_plain)
            c50, c99, _ = stats(t_cam)
            rows.append((label, ingest, p50, p99, c50, c99, exact / len(queries)))
            store.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads (default 1)")
    parser.add_argument("--stores", action="store_true", help="also the two store backends")
    parser.add_argument(
        "--store-queries",
        type=int,
        default=30,
        help="queries per store (Milvus Lite takes about 1 s each at 10k)",
    )
    parser.add_argument("--only-stores", action="store_true", help="the store table alone")
    parser.add_argument(
        "--milvus-max",
        type=int,
        default=10_000,
        help="stores: Milvus Lite only up to this size (it is slow)",
    )
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(
        f"1536-d clustered unit vectors, {args.queries} single queries, k=10, "
        f"{args.threads} FAISS thread(s), faiss {faiss.__version__}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        data = clustered(n, rng)
        # queries: other views of gallery identities (a gallery vector plus fresh noise)
        noise = np.random.default_rng(n).standard_normal((args.queries, DIM), dtype=np.float32)
        queries = data[rng.choice(n, args.queries, replace=False)] + 0.03 * noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        print(f"\n### {n:,} vectors\n")
        if args.only_stores:
            args.stores = True
        else:
            print_index_tables(n, data, queries)
        if args.stores:
            print(
                "\n| store | ingest items/s | p50 ms | p99 ms | 1-camera p50 ms | "
                "1-camera p99 ms | exact top-10 |"
            )
            print("|---|---|---|---|---|---|---|")
            for label, ingest, p50, p99, c50, c99, exact in store_rows(
                n, data, queries, milvus=n <= args.milvus_max, count=args.store_queries
            ):
                print(
                    f"| {label} | {ingest:.0f} | {p50:.2f} | {p99:.2f} | {c50:.2f} | "
                    f"{c99:.2f} | {exact:.0%} |"
                )


def print_index_tables(n: int, data: np.ndarray, queries: np.ndarray) -> None:
    print("| index | build s | memory MiB | p50 ms | p99 ms | queries/s | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    for label, build, memory, p50, p99, qps, rec in index_rows(n, data, queries):
        print(
            f"| {label} | {build:.1f} | {memory / 2**20:.0f} | {p50:.2f} | {p99:.2f} | "
            f"{qps:.0f} | {rec:.3f} |"
        )
    print(
        "\n| filter (Flat + IDSelector) | items passing | p50 ms | p99 ms | queries/s | "
        "exact top-10 |"
    )
    print("|---|---|---|---|---|---|")
    for label, passing, p50, p99, qps, exact in filter_rows(n, data, queries):
        print(f"| {label} | {passing:,} | {p50:.2f} | {p99:.2f} | {qps:.0f} | {exact:.0%} |")


if __name__ == "__main__":
    main()
