"""The audit trail: whole lines after kill -9 of a real ``sona serve``, rotation by size,
concurrent writers, and ``sona audit``'s filters over rotated files."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx

from service.audit import MAX_LINE, AuditLog
from service.audit_read import AuditQuery, audit_files, read_audit
from tests.service_support import SONA, Server, jpeg, make_checkpoint

FORM = {"camera_id": "c1", "timestamp": "2024-01-01T00:00:00Z"}


def records(path: Path) -> list[dict]:
    """Every line of every file of the trail, each required to be a whole JSON record."""
    found = []
    for file in audit_files(path):
        data = file.read_bytes()
        assert not data or data.endswith(b"\n"), f"{file} ends inside a line"
        found += [json.loads(line) for line in data.splitlines()]
    return found


def test_every_answered_request_is_in_the_trail_after_kill_9(tmp_path: Path) -> None:
    """Clients read images and search in four threads; the server is killed with SIGKILL
    mid-stream. Every line left is a whole record, every request that got an answer has
    its line, and a restarted server appends after them."""
    server = Server(make_checkpoint(tmp_path / "tiny.pt"), tmp_path / "data").start()
    with server.client() as c:
        r = c.post("/gallery", data=FORM, files={"images": ("a.jpg", jpeg(1), "image/jpeg")})
        item = r.json()["items"][0]["item_id"]
    answered: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                try:
                    path = f"/gallery/{item}/image" if n % 2 else f"/search?item_id={item}"
                    answered.append(c.get(path).headers["x-request-id"])
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    trail = tmp_path / "data" / "audit.log"
    lines = records(trail)
    assert len(answered) >= 20
    assert set(answered) <= {r["request_id"] for r in lines}
    assert all(r["key"] is None and r["status"] == 200 for r in lines[1:])  # no keys: open

    server = Server(tmp_path / "tiny.pt", tmp_path / "data").start()
    try:
        with server.client() as c:
            after = c.get(f"/gallery/{item}").headers["x-request-id"]
    finally:
        server.stop()
    lines = records(trail)
    assert lines[-1]["request_id"] == after


def test_rotation_keeps_the_set_number_of_files_and_reads_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=4096, keep=3)
    for n in range(300):
        log.write({"time": f"2024-01-01T00:00:{n % 60:02d}+00:00", "n": n, "key": "k"})
    log.close()
    files = audit_files(path)
    assert len(files) == 4 and all(f.stat().st_size <= 4096 for f in files)
    kept = [r["n"] for r in records(path)]
    assert kept == list(range(kept[0], 300))  # the newest, oldest first, none missing
    assert path.stat().st_mode & 0o777 == 0o600


def test_concurrent_writers_never_interleave_and_long_lines_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=64 * 2**20, keep=2)
    many = [f"{n:032x}" for n in range(5000)]

    def write(t: int) -> None:
        for n in range(200):
            log.write({"t": t, "n": n, "items": many if n == 0 else [f"{t}-{n}"]})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = records(path)
    assert len(lines) == 8 * 200
    long = [r for r in lines if r["n"] == 0]
    assert all(r["items_total"] == 5000 and 0 < len(r["items"]) < 5000 for r in long)
    assert max(len(line) for line in path.read_bytes().splitlines()) < MAX_LINE


def test_a_torn_tail_is_skipped_and_ended_before_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"key":"a","n":1}\n{"key":"b","n"')  # as if killed inside a write
    log = AuditLog(path, max_bytes=2**20, keep=2)
    log.write({"key": "c", "n": 3})
    log.close()
    query = AuditQuery()
    assert [r["n"] for r in read_audit(path, query)] == [1, 3] and query.torn == 1


def sona_audit(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SONA, "audit", "--log", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sona_audit_filters_by_key_item_gallery_and_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=4096, keep=50)
    for n in range(100):
        log.write(
            {
                "time": f"2024-01-01T{n // 60:02d}:{n % 60:02d}:00+00:00",
                "key": "alice" if n % 2 else "bob",
                "gallery": "lobby" if n % 3 else "vault",
                "items": [f"item{n}", "shared"],
                "n": n,
            }
        )
    log.close()
    assert len(audit_files(path)) > 2  # the filters read the rotated files too

    def ns(*args: str) -> list[int]:
        done = sona_audit(path, *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["n"] for line in done.stdout.splitlines()]

    assert ns() == list(range(100))
    assert ns("--key", "alice") == list(range(1, 100, 2))
    assert ns("--item", "item42") == [42]
    assert ns("--item", "shared", "--gallery", "vault") == list(range(0, 100, 3))
    assert ns("--since", "2024-01-01T00:10:00Z", "--until", "2024-01-01T00:12:00+00:00") == [
        10,
        11,
        12,
    ]
    assert ns("--key", "bob", "--since", "2024-01-01T01:38:00Z") == [98]


def test_sona_audit_mistakes_are_one_line(tmp_path: Path) -> None:
    missing = sona_audit(tmp_path / "none.log")
    assert missing.returncode == 2 and "no audit trail" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "a.log").write_text("{}\n")
    naive = sona_audit(tmp_path / "a.log", "--since", "2024-01-01T00:00:00")
    assert naive.returncode == 2 and "UTC offset" in naive.stderr.splitlines()[-1]
