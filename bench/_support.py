"""What the service benchmarks share: a model to serve, crops to send, a server to drive.

Kept apart from the tests on purpose: a benchmark measures, it does not depend on test code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = [
    "cpu_seconds",
    "crop_jpegs",
    "free_port",
    "int8_model",
    "machine_cpu_seconds",
    "milvus_server",
    "nginx_proxy",
    "process_table",
    "random_checkpoint",
    "served",
]


def random_checkpoint(path: Path) -> Path:
    """An untrained tiny SONA-Net: what a benchmark of the serving path needs, no training."""
    from model import PRESETS, SONANet, save_checkpoint

    return save_checkpoint(path, SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0)))


def crop_jpegs(folder: Path, count: int) -> list[bytes]:
    """``count`` JPEG pedestrian crops from a small seeded synthetic set made in ``folder``."""
    from training.synthetic import make_dataset

    make_dataset(folder, identities=max(4, count // 6), cameras=3, seed=0, overwrite=True)
    files = sorted((folder / "bounding_box_test").glob("*.jpg"))
    data = [f.read_bytes() for f in files]
    return [data[i % len(data)] for i in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def supervised(
    proc: subprocess.Popen,
    url: str,
    name: str,
    log: Path,
    *,
    ready_within: float,
    stop_within: float,
) -> Iterator[None]:
    """Wait until ``url``/readyz answers 200 (or ``proc`` exits: its log's tail in the error),
    run the block, then stop ``proc`` (SIGTERM, SIGKILL after ``stop_within`` seconds)."""
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready in {ready_within:.0f} s")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_within)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def served(
    checkpoint: Path, data_dir: Path, command: list[str] | None = None, **env: str
) -> Iterator[tuple[str, int]]:
    """``sona serve`` (or ``command``, which takes ``--port``) on 127.0.0.1 until the block
    ends: yields (url, pid)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"SONA_CHECKPOINT": str(checkpoint), "SONA_DATA_DIR": str(data_dir), **env}
    log = data_dir.parent / f"sona-serve-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [
                *(command or [str(Path(sys.executable).parent / "sona"), "serve"]),
                "--port",
                str(port),
            ],
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with supervised(proc, url, "sona serve", log, ready_within=120, stop_within=60):
        yield url, proc.pid


def int8_model(checkpoint: Path, crops: Path, output: Path) -> Path:
    """``sona export --int8`` of ``checkpoint``, calibrated on the crops under ``crops``."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "sona"),
            "export",
            str(checkpoint),
            "--int8",
            "-o",
            str(output),
            "--calibrate",
            str(crops),
            "--calibration-images",
            "64",
            "--check",
            str(crops),
            "--check-images",
            "16",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return output


@contextlib.contextmanager
def milvus_server(
    base_dir: Path | None = None, config: dict[str, str] | None = None
) -> Iterator[tuple[str, int, str]]:
    """The Milvus standalone server the ``milvus`` package embeds (2.3.x), on a free port
    under a temporary folder (in ``base_dir``) until the block ends: yields (uri, pid,
    version). ``config``: settings of its milvus.yaml by dotted name. Only one can run on a
    machine at a time (its internal ports are fixed)."""
    from milvus import MilvusServer, __version__

    folder = tempfile.mkdtemp(prefix="sona-milvus-", dir=base_dir)
    server = MilvusServer()
    for key, value in (config or {}).items():
        server.config.set(key, value)
    server.set_base_dir(folder)
    server.listen_port = free_port()
    server.start()
    try:
        yield f"http://127.0.0.1:{server.listen_port}", server.server_proc.pid, __version__
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def nginx_proxy(upstreams: list[str], folder: Path) -> Iterator[tuple[str, int]]:
    """Debian's nginx in the foreground on 127.0.0.1, round robin over ``upstreams`` (urls)
    as docker/nginx.conf does, until the block ends: yields (url, pid of its master)."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("client_body", "proxy"):  # its workers drop root: let them write there
        (folder / name).mkdir(exist_ok=True)
        (folder / name).chmod(0o777)
    servers = "".join(
        f"        server {u.removeprefix('http://')} max_fails=3 fail_timeout=10s;\n"
        for u in upstreams
    )
    (folder / "nginx.conf").write_text(
        f"""worker_processes auto;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    upstream sona {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 660m;
        proxy_request_buffering off;
        location / {{
            proxy_pass http://sona;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_read_timeout 120s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [nginx, "-p", str(folder), "-e", str(folder / "error.log")]
    command += ["-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
    with (folder / "nginx.log").open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    with supervised(proc, url, "nginx", folder / "nginx.log", ready_within=10, stop_within=10):
        yield url, proc.pid


def process_table() -> dict[int, tuple[int, float]]:
    """Every live process's parent and CPU seconds (user + system, its own and its reaped
    children's), read once from /proc (Linux): {pid: (parent pid, seconds)}."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after the command, which may hold spaces
        own = int(fields[11]) + int(fields[12])
        waited = int(fields[13]) + int(fields[14])  # children that exited and were reaped
        table[int(entry.name)] = (int(fields[1]), (own + waited) / tick)
    return table


def cpu_seconds(pid: int, table: dict[int, tuple[int, float]] | None = None) -> float:
    """CPU seconds of a process and its live descendants (from ``table``, else read now);
    0.0 when it is gone."""
    stats = process_table() if table is None else table
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += stats[current][1]
            todo += [p for p, (parent, _) in stats.items() if parent == current]
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) since boot,
    from /proc/stat (Linux): what a benchmark's own processes did not spend, others did."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")
