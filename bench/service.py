"""The service end to end: throughput and latency at rising concurrency, micro-batching on vs off.

Starts a real ``sona serve`` on 127.0.0.1 twice with the same checkpoint: once with dynamic
micro-batching (``SONA_MAX_BATCH_SIZE=32``, ``SONA_MAX_WAIT_MS=5``) and once without
(batch size 1, no wait), and drives ``POST /embed``, ``POST /gallery`` and ``GET /search`` from
1 to 64 concurrent async clients, a bounded number of requests per level after a warm-up.
Prints one table with both runs side by side and the ratio.

With ``--topology`` it compares deployments instead (micro-batching on): ``embedded`` (one
replica on the FAISS + SQLite store), ``milvus`` (one replica on a Milvus server) and
``milvus-2`` (two replicas on the same Milvus server and crop folder behind Debian's nginx,
round robin as in docker/nginx.conf), each with every ``--encoder``: ``torch`` (PyTorch) and
``int8`` (``sona export --int8``, ONNX Runtime). ``--milvus-server`` starts the Milvus
standalone server the ``milvus`` package embeds; ``--milvus-uri`` names a running one. Besides
latency it records the CPU seconds of every process per level (service replicas, Milvus,
nginx, and this load generator) from /proc, prints where the CPU went, and the CPU cost of a
request by route: what to plan replicas with.

    python bench/service.py --requests 96
    SONA_CHECKPOINT=runs/tiny/last.pt python bench/service.py
    python bench/service.py --topology embedded,milvus,milvus-2 --encoder torch,int8 \
        --milvus-server --requests 96
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import (
    cpu_seconds,
    crop_jpegs,
    int8_model,
    machine_cpu_seconds,
    milvus_server,
    nginx_proxy,
    process_table,
    random_checkpoint,
    served,
)
from client import SonaClient
from model.cpu import cpu_info

MODES = {
    "batched": {"SONA_MAX_BATCH_SIZE": "32", "SONA_MAX_WAIT_MS": "5"},
    "unbatched": {"SONA_MAX_BATCH_SIZE": "1", "SONA_MAX_WAIT_MS": "0"},
}


CROPS: list[bytes] = []  # 48 synthetic pedestrian crops: 16 to send, 32 to seed the gallery


async def level(url: str, route: str, concurrency: int, requests: int) -> tuple[float, ...]:
    """requests/s, p50 ms, p99 ms, errors, wall seconds of ``requests`` requests."""
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
    return requests / wall, statistics.median(ordered) * 1000, p99 * 1000, errors, wall


SEED_ITEMS: list[str] = []


def seed(url: str) -> None:
    """A gallery to search: 32 crops, whose ids the search level asks for."""
    with SonaClient(url) as sona:
        items = sona.add(
            [(f"{i}.jpg", CROPS[16 + i]) for i in range(32)],
            camera_id="c0",
            timestamp="2024-05-01T11:00:00Z",
        )
        SEED_ITEMS[:] = [item.item_id for item in items]


def drive(url: str, args, pids: dict[str, list[int]] | None = None) -> dict:
    """Warm up, then every route at every concurrency: {(route, clients): (req/s, p50, p99,
    errors, wall, {process group: CPU seconds during the level})}."""
    seed(url)
    routes = args.routes.split(",")
    for route in routes:  # warm-up: the first requests run slower
        asyncio.run(level(url, route, 8, 64))
    results = {}
    for route in routes:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            before = cpu_snapshot(pids or {})
            outcome = asyncio.run(level(url, route, concurrency, args.requests))
            after = cpu_snapshot(pids or {})
            cpu = {group: after[group] - before[group] for group in after}
            machine = cpu.pop("machine")
            cpu["others"] = max(0.0, machine - sum(cpu.values()))  # not this benchmark's
            results[(route, concurrency)] = (*outcome, cpu)
    return results


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    table = process_table()  # one read of /proc for every group
    snapshot = {
        group: sum(cpu_seconds(pid, table) for pid in group_pids)
        for group, group_pids in pids.items()
    }
    snapshot["client"] = time.process_time()  # this process: the load generator
    snapshot["machine"] = machine_cpu_seconds()
    return snapshot


def run_mode(checkpoint: Path, env: dict[str, str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp, served(checkpoint, Path(tmp) / "data", **env) as r:
        return drive(r[0], args)


# ------------------------------------------------------------------------ deployments


@contextlib.contextmanager
def deployment(
    topology: str, checkpoint: Path, env: dict[str, str], args, tmp: Path
) -> Iterator[tuple[str, dict[str, list[int]]]]:
    """The service as ``topology`` deploys it: yields (url, {process group: pids})."""
    pids: dict[str, list[int]] = {"replicas": []}
    if args.milvus_pid:
        pids["milvus"] = [args.milvus_pid]
    if topology == "embedded":
        with served(checkpoint, tmp / "data", **env) as (url, pid):
            pids["replicas"].append(pid)
            pids.pop("milvus", None)
            yield url, pids
        return
    prefix = f"bench_{uuid.uuid4().hex[:8]}_"
    shared = {
        **env,
        "SONA_STORE": "milvus",
        "SONA_MILVUS_URI": args.milvus_uri,
        "SONA_MILVUS_COLLECTION_PREFIX": prefix,
        "SONA_CROPS_DIR": str(tmp / "crops"),
    }
    try:
        with contextlib.ExitStack() as stack:
            urls = []
            for n in range(2 if topology == "milvus-2" else 1):
                url, pid = stack.enter_context(served(checkpoint, tmp / f"data-{n}", **shared))
                urls.append(url)
                pids["replicas"].append(pid)
            if len(urls) > 1:
                url, pid = stack.enter_context(nginx_proxy(urls, tmp / "nginx"))
                pids["nginx"] = [pid]
            yield url, pids
    finally:
        drop_collections(args.milvus_uri, prefix)


def drop_collections(uri: str, prefix: str) -> None:
    """The benchmark's collections on the server, gone; a failure here must not hide the
    error that ended the run."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri)
        for name in client.list_collections():
            if name.startswith(prefix):
                client.drop_collection(name)
        client.close()
    except Exception as error:
        print(f"could not drop the {prefix}* collections: {error}", file=sys.stderr)


def run_deployments(checkpoint: Path, args, tmp: Path) -> dict:
    encoders = {"torch": {"SONA_BACKEND": "torch"}}
    if "int8" in args.encoder.split(","):
        model = int8_model(checkpoint, tmp / "crops", tmp / "m.int8.onnx")
        encoders["int8"] = {"SONA_BACKEND": "onnx", "SONA_ONNX_MODEL": str(model)}
    runs = {}
    for topology in args.topology.split(","):
        for encoder in args.encoder.split(","):
            name = f"{topology}, {encoder}"
            print(f"  {name} ...", file=sys.stderr, flush=True)
            env = {**MODES["batched"], **encoders[encoder]}
            with (
                tempfile.TemporaryDirectory(dir=tmp) as where,
                deployment(topology, checkpoint, env, args, Path(where)) as (url, pids),
            ):
                runs[name] = drive(url, args, pids)
    return runs


def print_deployments(runs: dict, args) -> None:
    names = list(runs)
    cores = os.cpu_count() or 1
    print(
        f"sona serve on 127.0.0.1, {cores} CPUs ({cpu_info().describe()}) shared by every "
        f"process (replicas, Milvus, "
        f"nginx, the load generator), {args.requests} requests per level, checkpoint "
        f"{'SONA_CHECKPOINT' if os.environ.get('SONA_CHECKPOINT') else 'tiny'}, micro-batching "
        f"on; Milvus {args.milvus_version or args.milvus_uri}\n"
    )
    print("req/s (p50 / p99 ms) by deployment and encoder\n")
    print("| route | clients | " + " | ".join(names) + " | errors |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for key in runs[names[0]]:
        cells = []
        errors = 0
        for name in names:
            rps, p50, p99, err, *_ = runs[name][key]
            cells.append(f"{rps:.1f} ({p50:.0f} / {p99:.0f})")
            errors += err
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {errors} |")
    groups = ["replicas", "milvus", "nginx", "client", "others"]
    print(
        f"\nWhere the CPU went: cores busy during each level (CPU s / wall s; {cores} in all; "
        "client: this load generator; others: every other process on the machine)\n"
    )
    print("| deployment | route | clients | req/s | " + " | ".join(groups) + " | total |")
    print("|---|---|---|---|" + "---|" * len(groups) + "---|")
    for name in names:
        for (route, clients), (rps, _, _, _, wall, cpu) in runs[name].items():
            busy = [f"{cpu[g] / wall:.2f}" if g in cpu else "-" for g in groups]
            total = sum(cpu.values()) / wall
            print(
                f"| {name} | {route} | {clients} | {rps:.1f} | "
                + " | ".join(busy)
                + f" | {total:.2f} |"
            )
    print(
        "\nCost of a request (CPU ms per request, all levels together) and the bottleneck at "
        "the busiest level\n"
    )
    print(
        "| deployment | route | best req/s | replica CPU ms | Milvus CPU ms | nginx CPU ms | "
        "client CPU ms | others CPU ms | req/s per replica core | bottleneck |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for route in args.routes.split(","):
            levels = [v for (r, _), v in runs[name].items() if r == route]
            count = args.requests * len(levels)
            spent = {g: sum(v[5].get(g, 0.0) for v in levels) for g in groups}
            ms = {g: f"{1000 * spent[g] / count:.1f}" if g in levels[0][5] else "-" for g in groups}
            replica_ms = 1000 * spent["replicas"] / count
            best = max(levels, key=lambda v: v[0])
            print(
                f"| {name} | {route} | {best[0]:.1f} | {ms['replicas']} | {ms['milvus']} | "
                f"{ms['nginx']} | {ms['client']} | {ms['others']} | {1000 / replica_ms:.0f} | "
                f"{bottleneck(best, cores)} |"
            )


def bottleneck(outcome: tuple, cores: int) -> str:
    """Whether the CPUs were the limit at a level, and which of the deployment's processes
    was the busiest (other processes on the machine named apart)."""
    wall, cpu = outcome[4], outcome[5]
    busy = {g: s / wall for g, s in cpu.items()}
    total = sum(busy.values())
    others = busy.pop("others", 0.0)
    top = max(busy, key=busy.get)
    names = {
        "replicas": "the replicas",
        "milvus": "Milvus",
        "nginx": "nginx",
        "client": "the load generator",
    }
    where = f"most in {names[top]} ({busy[top]:.1f})"
    if others >= 0.1:
        where += f"; other processes {others:.1f}"
    if total >= 0.8 * cores:
        return f"CPU: {total:.1f} of {cores} cores busy, {where}"
    return f"waiting, not CPU: {total:.1f} of {cores} cores busy, {where}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per level")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--routes", default="embed,gallery,search")
    parser.add_argument(
        "--topology",
        default="",
        help="compare deployments instead of batched vs unbatched: any of embedded,milvus,milvus-2",
    )
    parser.add_argument("--encoder", default="torch", help="--topology: any of torch,int8")
    parser.add_argument(
        "--milvus-server",
        action="store_true",
        help="--topology milvus*: start the Milvus standalone server the milvus package embeds",
    )
    parser.add_argument("--milvus-uri", default="", help="--topology milvus*: a running server")
    args = parser.parse_args()
    topologies = [t for t in args.topology.split(",") if t]
    if unknown := set(topologies) - {"embedded", "milvus", "milvus-2"}:
        parser.error(f"unknown --topology {sorted(unknown)}")
    if unknown := set(args.encoder.split(",")) - {"torch", "int8"}:
        parser.error(f"unknown --encoder {sorted(unknown)}")
    needs_milvus = any(t.startswith("milvus") for t in topologies)
    if needs_milvus and not (args.milvus_server or args.milvus_uri):
        parser.error("--topology milvus needs --milvus-server or --milvus-uri")
    if "milvus-2" in topologies and not shutil.which("nginx", path=f"{os.defpath}:/usr/sbin"):
        parser.error("--topology milvus-2 needs nginx (Debian: apt-get install nginx-light)")
    args.milvus_version, args.milvus_pid = "", 0
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        CROPS[:] = crop_jpegs(Path(tmp) / "crops", 48)
        checkpoint = Path(
            os.environ.get("SONA_CHECKPOINT") or random_checkpoint(Path(tmp) / "m.pt")
        )
        if topologies:
            if needs_milvus and args.milvus_server:
                args.milvus_uri, args.milvus_pid, version = stack.enter_context(
                    milvus_server(Path(tmp))
                )
                args.milvus_version = f"{version} standalone (embedded server, this machine)"
            print_deployments(run_deployments(checkpoint, args, Path(tmp)), args)
            return
        runs = {mode: run_mode(checkpoint, env, args) for mode, env in MODES.items()}
    print(
        f"sona serve on 127.0.0.1, {os.cpu_count()} CPUs ({cpu_info().describe()}), "
        f"{args.requests} requests per level, "
        f"checkpoint {'SONA_CHECKPOINT' if os.environ.get('SONA_CHECKPOINT') else 'tiny'}\n"
    )
    print(
        "| route | clients | batched req/s | p50 ms | p99 ms | unbatched req/s | p50 ms | "
        "p99 ms | throughput ratio | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, (rps, p50, p99, err, *_) in runs["batched"].items():
        urps, up50, up99, uerr, *_ = runs["unbatched"][key]
        print(
            f"| {key[0]} | {key[1]} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {urps:.1f} | "
            f"{up50:.1f} | {up99:.1f} | {rps / urps:.2f}x | {err + uerr} |"
        )


if __name__ == "__main__":
    main()
