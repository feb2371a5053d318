"""Two ``sona serve`` replicas on one real Milvus server and one crop folder.

What a site with several replicas relies on: an item acknowledged by one replica is found,
with its crop, through the other; a deletion through one is gone from both; a replica killed
with SIGKILL mid-ingest loses no acknowledged item; and a Milvus restart is a 503 with
Retry-After while it lasts, then the service recovers by itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.service_support import Server, jpeg, make_checkpoint

pytestmark = pytest.mark.slow


def replica(checkpoint: Path, root: Path, uri: str, prefix: str, name: str) -> Server:
    return Server(
        checkpoint,
        root / name,
        log_dir=root,
        SONA_STORE="milvus",
        SONA_MILVUS_URI=uri,
        SONA_MILVUS_COLLECTION_PREFIX=prefix,
        SONA_CROPS_DIR=str(root / "crops"),
    )


def ingest(client: httpx.Client, seed: int, camera: str = "cam1") -> httpx.Response:
    return client.post(
        "/gallery",
        files={"images": ("crop.jpg", jpeg(seed), "image/jpeg")},
        data={"camera_id": camera, "timestamp": "2026-12-02T10:00:00Z"},
    )


def search_ids(client: httpx.Client, seed: int, k: int = 50) -> list[str]:
    response = client.post(
        "/search", files={"image": ("q.jpg", jpeg(seed), "image/jpeg")}, params={"k": k}
    )
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["results"]]


@pytest.fixture
def pair(milvus_server: str, tmp_path: Path):
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    prefix = f"r{uuid.uuid4().hex[:8]}_"
    servers = [replica(checkpoint, tmp_path, milvus_server, prefix, n) for n in ("a", "b")]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.kill()


def test_one_replica_writes_the_other_reads_and_deletes(pair: list[Server]) -> None:
    a, b = pair
    with a.client() as ca, b.client() as cb:
        assert ingest(ca, 2).status_code == 201  # the gallery outlives the deleted item
        response = ingest(ca, 1)
        assert response.status_code == 201, response.text
        item = response.json()["items"][0]["item_id"]
        # the default (Session): another replica's write is visible within the time tick
        seen = eventually(lambda: cb.get(f"/gallery/{item}").status_code == 200)
        assert seen < 5.0, f"replica b saw replica a's write after {seen:.1f} s"
        assert cb.get(f"/gallery/{item}").json()["camera_id"] == "cam1"
        crop = cb.get(f"/gallery/{item}/image")
        assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
        assert item in search_ids(cb, 1)
        assert cb.delete(f"/gallery/{item}").status_code in (200, 204)
        assert cb.get(f"/gallery/{item}").status_code == 404  # its own delete: at once
        assert item not in search_ids(cb, 1)
        assert eventually(lambda: ca.get(f"/gallery/{item}").status_code == 404) < 5.0
        assert item not in search_ids(ca, 1)


def eventually(check, limit: float = 30.0) -> float:
    """Seconds until ``check()`` holds (polling), or fails the test after ``limit``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit, "never held"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_replica_killed_mid_ingest_loses_no_acknowledged_item(pair: list[Server]) -> None:
    a, b = pair
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with a.client(timeout=10) as client:
            seed = 100
            while not stop.is_set():
                try:
                    response = ingest(client, seed)
                except httpx.TransportError:
                    return  # the replica is gone
                if response.status_code == 201:
                    acknowledged.append(response.json()["items"][0]["item_id"])
                seed += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    a.kill()  # SIGKILL while the writer is sending
    stop.set()
    thread.join(timeout=30)
    assert len(acknowledged) >= 8
    with b.client() as cb:
        eventually(lambda: cb.get(f"/gallery/{acknowledged[-1]}").status_code == 200)
        for item in acknowledged:
            assert cb.get(f"/gallery/{item}").status_code == 200, item
            assert cb.get(f"/gallery/{item}/image").status_code == 200, item
        assert cb.get("/gallery").json()["total"] >= len(acknowledged)


def test_a_milvus_outage_is_503_with_retry_after_then_recovers(
    milvus_standalone, milvus_server: str, tmp_path: Path
) -> None:
    """The server stops answering (SIGSTOP: a hung server or a cut network), then comes back.

    A restart of the embedded server on the same data folder does not come back here (its
    new node waits on the old node's session), so the outage is a freeze and a thaw.
    """
    if milvus_standalone is None:
        pytest.skip("SONA_TEST_MILVUS_URI names a server this test cannot freeze")
    pid = milvus_standalone.server_proc.pid
    server = replica(make_checkpoint(tmp_path / "m.pt"), tmp_path, milvus_server, "outage_", "a")
    server.env["SONA_MILVUS_TIMEOUT_S"] = "3"
    server.start()
    try:
        with server.client(timeout=60) as client:
            before = ingest(client, 7)
            assert before.status_code == 201, before.text
            item = before.json()["items"][0]["item_id"]
            os.kill(pid, signal.SIGSTOP)
            down = ingest(client, 8)
            assert down.status_code == 503, down.text
            assert int(down.headers["Retry-After"]) >= 1
            assert down.headers["content-type"].startswith("application/problem+json")
            image = {"image": ("q.jpg", jpeg(7), "image/jpeg")}
            assert client.post("/search", files=image).status_code == 503
            os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 120
            while True:  # no service restart: it carries on by itself
                response = ingest(client, 9)
                if response.status_code == 201 or time.monotonic() > deadline:
                    break
                assert response.status_code == 503, response.text
                time.sleep(1)
            assert response.status_code == 201, response.text
            assert client.get(f"/gallery/{item}").status_code == 200
            assert item in search_ids(client, 7)
    finally:
        os.kill(pid, signal.SIGCONT)
        server.kill()
