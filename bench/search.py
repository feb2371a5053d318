"""Gallery search at 10k to 1M 1536-d vectors: indexes, filters, and the store's auto index.

For each size it prints, from one run:

* indexes: numpy brute force (the baseline), FAISS Flat (exact), HNSW32, IVF,Flat, IVF,SQ8 and
  the store's ``auto`` index past its threshold (the flat index re-scoring the candidates of an
  IVF,PQ fast-scan index): build time, memory, then for every nprobe / efSearch of a sweep
  recall@10 against exact, p50/p99 latency of single queries and queries/s;
* filters (one camera of 8, a 10% time window): the flat index with an IDSelector (what the
  store does with a camera or time filter, on ``auto`` too) against the candidate index with
  the same selector: latency and whether the top 10 is exactly the brute-force top 10 of the
  items that pass;
* stores (``--stores``): the FAISS + SQLite store on ``auto`` (and on ``Flat`` up to
  ``--flat-store-max``), plus Milvus Lite up to ``--milvus-max``: ingest rate, search p50/p99
  and recall@10; one camera of 20 and one hour of a day (items spread over 24 h): p50/p99,
  recall@10 and exactness.

Data (``--data``): no real gallery of this size was at hand, so two synthetic ones, identities
of 8 views each, unit length. ``isotropic``: identity centres and view noise are isotropic
Gaussians in 1536-d; the 8 views of the query's identity are the top 8 and the 9th and 10th
neighbours are near-ties among unrelated vectors, which no index finds without scanning nearly
everything (a worst case for recall@10). ``lowrank``: identity centres vary in a random
``--rank``-dimensional subspace (appearance varies along few directions), view noise stays
isotropic; the 9th and 10th neighbours are look-alikes. ``--vectors embeddings.npy`` runs on
real embeddings instead (``sona gallery export`` writes them): queries are drawn from them.

    python bench/search.py --sizes 10000,100000 --data lowrank --stores
    python bench/search.py --sizes 1000000 --data lowrank --stores   # ~13 GiB RAM, ~1.5 h
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np
from _support import milvus_server

from model.cpu import cpu_info
from service.store.faiss import spec as faiss_spec
from service.store.faiss.index import no_polysemous

DIM = 1536
CAMERAS = 8
#: The store table: a site's day, 20 cameras, items spread evenly over 24 hours.
STORE_CAMERAS = 20
DAY_S = 86400.0
K = 10
#: Past this many vectors the data are mapped from a file (``clustered``).
IN_MEMORY_MAX = 200_000


# ------------------------------------------------------------------------------------ data


def clustered(
    n: int,
    rng: np.random.Generator,
    rank: int = 0,
    per_identity: int = 8,
    folder: str | None = None,
):
    """Unit vectors around n / per_identity identity centres (views of the same person).

    rank 0: isotropic centres; else centres in a random rank-dimensional subspace. Past
    ``IN_MEMORY_MAX`` vectors they are written to a file in ``folder`` and mapped: at a million
    the 6 GB would otherwise sit in this process beside the stores under test (the page
    cache can give it back to them).
    """
    ids = max(1, n // per_identity)
    if rank:
        basis = np.linalg.qr(rng.standard_normal((DIM, rank)))[0].astype(np.float32)
        centres = rng.standard_normal((ids, rank), dtype=np.float32) @ basis.T
        centres *= np.float32(np.sqrt(DIM / rank))  # the same norm as isotropic centres
    else:
        centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    if n > IN_MEMORY_MAX:
        with tempfile.NamedTemporaryFile(dir=folder, prefix="sona-bench-vectors-") as f:
            data = np.memmap(f.name, dtype=np.float32, mode="w+", shape=(n, DIM))
    else:
        data = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        chunk = centres[np.arange(start, stop) % len(centres)] + 0.9 * noise
        data[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return data


def load_data(args: argparse.Namespace, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The gallery and the queries: other views of gallery identities."""
    rng = np.random.default_rng(0)
    if args.vectors:
        every = np.load(args.vectors, mmap_mode="r")
        pick = rng.permutation(len(every))
        data = np.ascontiguousarray(every[np.sort(pick[:n])], dtype=np.float32)
        queries = np.ascontiguousarray(every[pick[n : n + args.queries]], dtype=np.float32)
        if len(data) < n or len(queries) < args.queries:
            raise SystemExit(f"{args.vectors} holds {len(every)} vectors: too few")
        return data, queries
    data = clustered(n, rng, rank=args.rank if args.data == "lowrank" else 0, folder=args.tmp)
    # a gallery vector plus fresh noise (cosine about 0.65 to it)
    noise = np.random.default_rng(n).standard_normal((args.queries, DIM), dtype=np.float32)
    queries = data[rng.choice(n, args.queries, replace=False)] + 0.03 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return data, queries


def top_k(data: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """Exact top k ids per query (batched matrix products)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    sub = data if allowed is None else data[allowed]
    for start in range(0, len(queries), 50):
        s = queries[start : start + 50] @ sub.T
        cand = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, cand, 1), axis=1)
        best = np.take_along_axis(cand, order, 1)
        out[start : start + 50] = best if allowed is None else allowed[best]
    return out


# ------------------------------------------------------------------------------------ timing


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def timed_queries(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, budget: float
) -> tuple[list[np.ndarray], list[float]]:
    """Single queries one after another, until all ran or ``budget`` seconds passed (>= 20)."""
    results, times = [], []
    search(queries[:1])  # warm-up
    began = time.perf_counter()
    for q in queries:
        start = time.perf_counter()
        results.append(search(q[None]))
        times.append(time.perf_counter() - start)
        if len(times) >= 20 and time.perf_counter() - began > budget:
            break
    return results, times


def stats(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1000, p99 * 1000, len(times) / sum(times)


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=False)  # found: fewer when the time budget ran out
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in pairs]))


def exact_share(found: list[np.ndarray], truth: np.ndarray, data, queries) -> float:
    """Share of queries whose top 10 scores equal the brute-force ones (ties may swap ids)."""
    same = 0
    for f, t, q in zip(found, truth, queries, strict=False):
        f = np.asarray(f)[:K]
        same += int(len(f) == K and np.allclose(data[f] @ q, data[t[:K]] @ q, atol=1e-5))
    return same / len(found)


# ------------------------------------------------------------------------------------ indexes


class Row:
    def __init__(self, label: str, build: float | None, memory: float | None):
        self.label, self.build, self.memory = label, build, memory
        self.settings: list[tuple[str, float, float, float, float, int]] = []

    def measure(self, setting: str, search, queries, truth, budget: float) -> float:
        found, times = timed_queries(search, queries, budget)
        rec = recall(found, truth)
        self.settings.append((setting, rec, *stats(times), len(times)))
        return rec


def rerank(data: np.ndarray, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """What the store does with candidates: exact scores, the best K."""
    ids = ids[ids >= 0]
    scores = data[ids] @ q[0]
    return ids[np.argsort(-scores)[:K]]


def build(factory: str, data: np.ndarray, train: np.ndarray | None, threads: int):
    faiss.omp_set_num_threads(threads)
    gc.collect()
    before = rss_mib()
    start = time.perf_counter()
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    no_polysemous(index)
    if not index.is_trained:
        index.train(train)
    for s in range(0, len(data), 100_000):
        index.add(data[s : s + 100_000])
    took = time.perf_counter() - start
    gc.collect()
    return index, took, rss_mib() - before


def build_hnsw(data: np.ndarray, threads: int, budget: float):
    """HNSW32 in chunks; gives up when the whole build would take longer than ``budget``."""
    faiss.omp_set_num_threads(threads)
    gc.collect()
    before = rss_mib()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    n = len(data)
    for s in range(0, n, 20_000):
        index.add(data[s : s + 20_000])
        took = time.perf_counter() - start
        done = min(n, s + 20_000)
        if done < n and (took * n / done * 1.25 > budget or took > budget):  # inserts slow down
            del index
            return None, took, done
    return index, time.perf_counter() - start, rss_mib() - before


def index_rows(args, n: int, data: np.ndarray, queries: np.ndarray, truth: np.ndarray):
    rows: list[Row] = []
    budget = args.time
    st = args.threads
    # what the store trains on when a gallery reaches the threshold (smaller sizes: all of it)
    threshold = min(n, faiss_spec.AUTO_THRESHOLD)
    auto_factory = faiss_spec.auto_factory(threshold, DIM)
    nlist = int(auto_factory.split(",")[0][3:])
    train = data[:threshold]
    want = set(args.indexes.split(","))

    def numpy_search(q: np.ndarray) -> np.ndarray:
        scores = data @ q[0]
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    if "numpy" in want:
        row = Row("numpy brute force (BLAS, 2 threads)", 0.0, data.nbytes / 2**20)
        row.measure("-", numpy_search, queries, truth, budget)
        rows.append(row)

    if "flat" in want:
        index, took, mem = build("Flat", data, None, args.build_threads)
        faiss.omp_set_num_threads(st)
        row = Row("Flat (exact)", took, mem)
        row.measure("-", lambda q: index.search(q, K)[1][0], queries, truth, budget)
        rows.append(row)
        del index

    if "hnsw" in want and n > 0:
        index, took, mem = build_hnsw(data, args.build_threads, args.hnsw_budget)
        if index is None:
            row = Row(
                f"HNSW32: skipped, {mem:,} of {n:,} vectors in {took:.0f} s, the whole build "
                f"would take over --hnsw-budget {args.hnsw_budget:.0f} s",
                None,
                None,
            )
        else:
            faiss.omp_set_num_threads(st)
            row = Row("HNSW32 (efConstruction 40)", took, mem)
            for ef in (16, 32, 64, 128, 256, 512):
                index.hnsw.efSearch = ef
                row.measure(
                    f"efSearch {ef}",
                    lambda q: index.search(q, K)[1][0],
                    queries,
                    truth,
                    budget,
                )
            del index
        rows.append(row)

    def ivf_row(factory: str, label: str, refine: int, probes, memory_extra: float = 0.0):
        index, took, mem = build(factory, data, train, args.build_threads)
        faiss.omp_set_num_threads(st)
        row = Row(label, took, mem + memory_extra)
        for nprobe in probes:
            if nprobe > nlist:
                continue
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            for r in refine:

                def search(q: np.ndarray, p=params, r=r) -> np.ndarray:
                    ids = index.search(q, r, params=p)[1][0]
                    return ids if r == K else rerank(data, q, ids)

                setting = f"nprobe {nprobe}" + (f", re-score {r}" if r != K else "")
                row.measure(setting, search, queries, truth, budget)
        rows.append(row)
        return index

    if "ivf" in want:
        ivf_row(f"IVF{nlist},Flat", f"IVF{nlist},Flat", (K,), (4, 8, 16, 32, 64, 128))
    if "sq8" in want:
        ivf_row(
            f"IVF{nlist},SQ8", f"IVF{nlist},SQ8 (+ exact re-scoring)", (43,), (8, 16, 32, 64, 128)
        )
    if "auto" in want:
        auto = ivf_row(
            auto_factory,
            f"auto: flat + {auto_factory} candidates (memory: both)",
            (50, faiss_spec.AUTO_CANDIDATES, 200),
            (32, 64, 128, 256, 512),
            memory_extra=data.nbytes / 2**20,
        )
        return rows, auto, nlist
    return rows, None, nlist


def filter_rows(args, n: int, data: np.ndarray, queries: np.ndarray, auto, nlist: int):
    rng = np.random.default_rng(2)
    cameras = rng.integers(0, CAMERAS, n)
    times = np.arange(n)  # time order = insertion order
    faiss.omp_set_num_threads(args.build_threads)
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    for s in range(0, n, 100_000):
        flat.add_with_ids(data[s : s + 100_000], np.arange(s, min(n, s + 100_000), dtype=np.int64))
    faiss.omp_set_num_threads(args.threads)
    rows = []
    for label, allowed in [
        ("1 camera of 8", np.flatnonzero(cameras == 3)),
        ("10% time window", np.flatnonzero(times >= int(0.45 * n))[: n // 10]),
    ]:
        allowed = allowed.astype(np.int64)
        truth = top_k(data, queries, K, allowed)
        selector = faiss.IDSelectorBatch(allowed)
        params = faiss.SearchParameters(sel=selector)
        found, took = timed_queries(
            lambda q, p=params: flat.search(q, K, params=p)[1][0], queries, args.time
        )
        exact = exact_share(found, truth, data, queries)
        rows.append((label, len(allowed), "flat + IDSelector (the store)", *stats(took), exact))
        if auto is not None:
            p = faiss.SearchParametersIVF(sel=selector, nprobe=min(nlist, faiss_spec.AUTO_NPROBE))
            r = faiss_spec.AUTO_CANDIDATES
            found, took = timed_queries(
                lambda q, p=p, r=r: rerank(data, q, auto.search(q, r, params=p)[1][0]),
                queries,
                args.time,
            )
            exact = exact_share(found, truth, data, queries)
            rows.append((label, len(allowed), "candidate index + IDSelector", *stats(took), exact))
    return rows


# ------------------------------------------------------------------------------------ stores


def store_rows(args, n: int, data: np.ndarray, queries: np.ndarray, truth: np.ndarray):
    from service.store import FaissSqliteStore, SearchFilter

    queries = queries[: args.store_queries]
    truth = truth[: args.store_queries]
    backends: list[tuple[str, Callable]] = [
        ("FAISS + SQLite, auto", lambda root: FaissSqliteStore(root, dim=DIM))
    ]
    if n <= args.flat_store_max:
        backends.append(
            ("FAISS + SQLite, Flat", lambda root: FaissSqliteStore(root, dim=DIM, index="Flat"))
        )
    if n <= args.milvus_max:
        from service.store.milvus import MilvusStore

        backends.append(
            ("Milvus Lite (FLAT)", lambda root: MilvusStore(str(root / "milvus.db"), dim=DIM))
        )
    base = datetime(2024, 1, 1, tzinfo=UTC)
    camera_of = np.arange(n) % STORE_CAMERAS
    seconds = np.arange(n) * (DAY_S / n)  # a day of footage, items evenly spread over it
    hour = (10 * 3600.0, 11 * 3600.0)  # 10:00 to 11:00, both ends included
    filters = [
        ("camera", SearchFilter(cameras=frozenset({"c3"})), np.flatnonzero(camera_of == 3)),
        (
            "hour",
            SearchFilter(
                since=base + timedelta(seconds=hour[0]), until=base + timedelta(seconds=hour[1])
            ),
            np.flatnonzero((seconds >= hour[0]) & (seconds <= hour[1])),
        ),
    ]
    rows = []
    for label, make in backends:
        root = Path(tempfile.mkdtemp(prefix="sona-bench-", dir=args.tmp))
        try:
            gc.collect()
            before = rss_mib()
            store = make(root)
            ingest, position = fill(store, n, data, base)
            memory = rss_mib() - before
            rows.append(
                [
                    label,
                    ingest,
                    memory,
                    *measure(args, store, position, data, queries, truth, filters),
                ]
            )
            store.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.milvus_uri and n <= args.milvus_server_max:
        rows += milvus_server_rows(args, n, data, queries, truth, base, filters)
    return rows


def fill(
    store,
    n: int,
    data: np.ndarray,
    base: datetime,
    *,
    gallery: str = "bench",
    crops: Sequence[bytes] = (b"\xff\xd8\xff",),
) -> tuple[float, dict[str, int]]:
    """Ingest the n vectors in batches of 1,000 into ``gallery``, each with one of ``crops``
    in turn: items/s and each item's row in ``data``."""
    from service.store import NewItem

    position: dict[str, int] = {}
    start = time.perf_counter()
    for chunk in range(0, n, 1000):
        added = store.add(
            gallery,
            [
                NewItem(
                    embedding=data[i],
                    camera_id=f"c{i % STORE_CAMERAS}",
                    timestamp=base + timedelta(seconds=i * DAY_S / n),
                    image=crops[i % len(crops)],
                    image_type="image/jpeg",
                )
                for i in range(chunk, min(n, chunk + 1000))
            ],
        )
        position.update((a.item_id, chunk + j) for j, a in enumerate(added))
    return n / (time.perf_counter() - start), position


def measure(args, store, position, data, queries, truth, filters) -> list:
    """p50, p99, recall@10; then p50, p99, recall@10 and exactness under each filter."""

    def run(where):
        return timed_queries(
            lambda q: np.array(
                [position[h.item.item_id] for h in store.search("bench", q[0], K, where)]
            ),
            queries,
            args.time,
        )

    found, took = run(None)
    row = [*stats(took)[:2], recall(found, truth)]
    for _, where, allowed in filters:
        f_truth = top_k(data, queries, K, allowed)
        found, took = run(where)
        row += [
            *stats(took)[:2],
            recall(found, f_truth),
            exact_share(found, f_truth, data, queries),
        ]
    return row


def tree_rss_mib(pid: int | None) -> float:
    """Resident memory of a process and its descendants (the embedded server's), MiB."""
    if pid is None:
        return float("nan")
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def seal(store, settle: float) -> None:
    """The store's own seal (a flush, then a wait until the query nodes serve every row from
    an indexed sealed segment, as a bulk import ends), then ``settle`` seconds more."""
    began = time.perf_counter()
    done = store.seal(timeout=3600.0)
    print(f"  sealed: {done} after {time.perf_counter() - began:.0f} s", flush=True)
    time.sleep(settle)


def milvus_server_rows(args, n, data, queries, truth, base, filters) -> list[list]:
    """A real Milvus server: one collection per vector index, searched at each consistency
    level (a second store on the same collection). Memory is the server's, not measured."""
    import uuid

    from service.store.milvus import MilvusStore
    from service.store.milvus import search as milvus_search

    if args.milvus_exact_max is not None:
        milvus_search.EXACT_FILTERED_MAX = args.milvus_exact_max
    rows = []
    for index in args.milvus_indexes.split(","):
        root = Path(tempfile.mkdtemp(prefix="sona-bench-", dir=args.tmp))
        prefix = f"bench_{index.lower()}_{uuid.uuid4().hex[:8]}_"

        def open_store(level: str, index=index, root=root, prefix=prefix) -> MilvusStore:
            return MilvusStore(
                args.milvus_uri,
                dim=DIM,
                collection_prefix=prefix,
                crops=root,
                index=index,
                consistency=level,
            )

        try:
            writer = open_store("Strong")
            ingest, position = fill(writer, n, data, base)
            print(
                f"  {index}: ingest {ingest:.0f} items/s, server memory "
                f"{tree_rss_mib(args.milvus_pid):,.0f} MiB",
                flush=True,
            )
            for sealed in (False, True) if args.milvus_seal else (False,):
                if sealed:
                    seal(writer, args.milvus_settle)
                    print(f"  server memory {tree_rss_mib(args.milvus_pid):,.0f} MiB", flush=True)
                for level in args.milvus_consistency.split(","):
                    store = writer if level == "Strong" else open_store(level)
                    for ef in (args.milvus_efs or [store.ef_search]) if index == "HNSW" else [0]:
                        label = f"Milvus server {args.milvus_version} ({index}), {level}"
                        if ef:
                            store.searcher.ef_search = ef
                            label += f", ef {ef}"
                        label += ", sealed and indexed" if sealed else ""
                        row = measure(args, store, position, data, queries, truth, filters)
                        rows.append([label, ingest, tree_rss_mib(args.milvus_pid), *row])
                        print(f"  {label}: p50 {row[0]:.2f} ms, recall@10 {row[2]:.3f}", flush=True)
                    if store is not writer:
                        store.close()
            writer.close()
            from pymilvus import MilvusClient

            MilvusClient(uri=args.milvus_uri).drop_collection(writer.collection)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--data", choices=("isotropic", "lowrank"), default="lowrank")
    parser.add_argument("--rank", type=int, default=64, help="lowrank: identity subspace")
    parser.add_argument("--vectors", help="a .npy of real embeddings instead of synthetic ones")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--time", type=float, default=30.0, help="seconds of queries per setting")
    parser.add_argument("--threads", type=int, default=1, help="FAISS search threads (1)")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument(
        "--indexes",
        default="numpy,flat,hnsw,ivf,sq8,auto",
        help="which of numpy,flat,hnsw,ivf,sq8,auto",
    )
    parser.add_argument(
        "--hnsw-budget",
        type=float,
        default=2400.0,
        help="skip HNSW when its build would take longer (seconds)",
    )
    parser.add_argument("--stores", action="store_true", help="also the store backends")
    parser.add_argument("--only-stores", action="store_true", help="the store table alone")
    parser.add_argument("--store-queries", type=int, default=100)
    parser.add_argument("--flat-store-max", type=int, default=100_000)
    parser.add_argument(
        "--milvus-max", type=int, default=0, help="stores: Milvus Lite up to this size (slow)"
    )
    parser.add_argument(
        "--milvus-server",
        action="store_true",
        help="stores: also a real Milvus standalone server, the one the milvus package embeds "
        "(started under --tmp on a free port)",
    )
    parser.add_argument("--milvus-uri", help="stores: a running Milvus server instead")
    parser.add_argument("--milvus-server-max", type=int, default=100_000)
    parser.add_argument(
        "--milvus-indexes", default="FLAT,HNSW", help="the server's vector indexes to measure"
    )
    parser.add_argument(
        "--milvus-consistency",
        default="Strong,Session,Bounded,Eventually",
        help="consistency levels to search at",
    )
    parser.add_argument(
        "--milvus-exact-max",
        type=int,
        help="server: score filters passing at most this many items in the service "
        "(default: the store's EXACT_FILTERED_MAX; 0 sends every filter through the index)",
    )
    parser.add_argument(
        "--milvus-seal",
        action="store_true",
        help="server: measure again after a flush, once the index covers every row",
    )
    parser.add_argument(
        "--milvus-settle",
        type=float,
        default=0.0,
        help="--milvus-seal: seconds to wait after the seal",
    )
    parser.add_argument(
        "--milvus-ef",
        default="",
        help="server: HNSW ef values to search with, comma-separated (default: the store's)",
    )
    parser.add_argument(
        "--milvus-config",
        default="",
        help="--milvus-server: its milvus.yaml settings, KEY=VALUE,... (e.g. "
        "dataCoord.segment.maxSize=2048,dataCoord.segment.sealProportion=0.25)",
    )
    parser.add_argument("--tmp", default=None, help="where the stores' data go")
    args = parser.parse_args()
    try:
        server_config = dict(kv.split("=", 1) for kv in args.milvus_config.split(",") if kv)
        args.milvus_efs = [int(ef) for ef in args.milvus_ef.split(",") if ef]
    except ValueError:
        parser.error("--milvus-config takes KEY=VALUE,...; --milvus-ef integers")
    args.milvus_version = ""
    args.milvus_pid = None
    with contextlib.ExitStack() as stack:
        if args.milvus_server:
            args.milvus_uri, args.milvus_pid, args.milvus_version = stack.enter_context(
                milvus_server(Path(args.tmp) if args.tmp else None, server_config)
            )
        run(args)


def run(args) -> None:
    source = args.vectors or (
        f"{args.data} (rank {args.rank})" if args.data == "lowrank" else args.data
    )
    print(
        f"{cpu_info().describe()}; 1536-d unit vectors, {source}, "
        f"up to {args.queries} single queries per setting "
        f"(at most ~{args.time:.0f} s each), k={K}, {args.threads} FAISS search thread(s), "
        f"{args.build_threads} build threads, faiss {faiss.__version__}; auto: exact below "
        f"{faiss_spec.AUTO_THRESHOLD:,} items, then flat + "
        f"{faiss_spec.auto_factory(faiss_spec.AUTO_THRESHOLD, DIM)} nprobe "
        f"{faiss_spec.AUTO_NPROBE}, {faiss_spec.AUTO_CANDIDATES} candidates",
        flush=True,
    )
    for n in (int(s) for s in args.sizes.split(",")):
        began = time.perf_counter()
        data, queries = load_data(args, n)
        truth = top_k(data, queries, K)
        print(f"\n### {n:,} vectors\n", flush=True)
        if not args.only_stores:
            rows, auto, nlist = index_rows(args, n, data, queries, truth)
            print_rows(rows)
            print_filters(filter_rows(args, n, data, queries, auto, nlist))
            del auto
        if args.stores or args.only_stores:
            print_stores(store_rows(args, n, data, queries, truth))
        print(f"\n({n:,}: {time.perf_counter() - began:.0f} s)", flush=True)
        del data


def print_rows(rows: list[Row]) -> None:
    print("| index | build s | memory MiB | setting | recall@10 | p50 ms | p99 ms | queries/s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        first = True
        if not row.settings:
            print(f"| {row.label} | | | | | | | |")
        for setting, rec, p50, p99, qps, _count in row.settings:
            build = f"{row.build:.1f}" if first and row.build is not None else ""
            memory = f"{row.memory:,.0f}" if first and row.memory is not None else ""
            label = row.label if first else ""
            print(
                f"| {label} | {build} | {memory} | {setting} | {rec:.3f} | {p50:.2f} | "
                f"{p99:.2f} | {qps:.0f} |"
            )
            first = False
    print(flush=True)


def print_filters(rows: list[tuple]) -> None:
    print("| filter | items passing | searched with | p50 ms | p99 ms | queries/s | exact top-10 |")
    print("|---|---|---|---|---|---|---|")
    for label, passing, how, p50, p99, qps, exact in rows:
        print(
            f"| {label} | {passing:,} | {how} | {p50:.2f} | {p99:.2f} | {qps:.0f} | {exact:.0%} |"
        )
    print(flush=True)


def print_stores(rows: list[list]) -> None:
    print(
        "| store | ingest items/s | memory MiB | p50 ms | p99 ms | recall@10 | 1 camera of 20 p50 "
        "| p99 | recall@10 | exact | 1 hour of 24 p50 | p99 | recall@10 | exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        memory = "-" if r[2] != r[2] else f"{r[2]:,.0f}"  # NaN: another process's memory
        print(
            f"| {r[0]} | {r[1]:.0f} | {memory} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.3f} | "
            f"{r[6]:.2f} | {r[7]:.2f} | {r[8]:.3f} | {r[9]:.0%} | {r[10]:.2f} | {r[11]:.2f} | "
            f"{r[12]:.3f} | {r[13]:.0%} |"
        )
    print(flush=True)


if __name__ == "__main__":
    main()
