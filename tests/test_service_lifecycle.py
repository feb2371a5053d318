"""Start-up, authentication, and durability across kill -9, with real ``sona serve`` processes."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service_support import SONA, Server, jpeg, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [SONA, "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"garbage", "not a readable checkpoint")],
)
def test_bad_checkpoint_stops_startup_with_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    result = serve({"SONA_CHECKPOINT": str(path), "SONA_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_settings_stop_startup_with_one_line(tmp_path: Path) -> None:
    result = serve({"SONA_MAX_BATCH_SIZE": "zero", "SONA_CHECKPOINT": "x.pt"})
    assert result.returncode == 2 and "SONA_MAX_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
    result = serve({"SONA_INDEX": " ", "SONA_CHECKPOINT": "x.pt"})
    assert result.returncode == 2 and "SONA_INDEX" in result.stderr


def test_api_keys(checkpoint: Path, tmp_path: Path) -> None:
    server = Server(checkpoint, tmp_path / "data", SONA_API_KEYS="k1-secret, k2-secret").start()
    try:
        with server.client() as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").status_code == 200
            for method, path in [
                ("GET", "/gallery"),
                ("GET", "/metrics"),
                ("GET", "/search?query_id=x"),
                ("POST", "/embed"),
                ("GET", "/gallery/abc"),
                ("DELETE", "/gallery/abc"),
            ]:
                response = c.request(method, path)
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.headers["content-type"].startswith("application/problem+json")
            wrong = c.get("/gallery", headers={"Authorization": "Bearer k1-secreT"})
            assert wrong.status_code == 401
            assert c.get("/gallery", headers={"Authorization": "k1-secret"}).status_code == 401
            for key in ("k1-secret", "k2-secret"):
                ok = c.get("/gallery", headers={"Authorization": f"Bearer {key}"})
                assert ok.status_code == 200
            embedded = c.post(
                "/embed",
                headers={"Authorization": "Bearer k2-secret"},
                files={"image": ("x.jpg", jpeg(1), "image/jpeg")},
            )
            assert embedded.status_code == 200
        assert "k1-secret" not in server.log.read_text()
    finally:
        server.stop()


@pytest.mark.slow
def test_acknowledged_items_survive_kill_9(checkpoint: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acknowledged: list[dict] = []
    rng = random.Random(7)
    for round_ in range(3):
        server = Server(checkpoint, data_dir).start()
        stop = threading.Event()

        def burst(
            server: Server = server, round_: int = round_, stop: threading.Event = stop
        ) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                i = 0
                while not stop.is_set():
                    images = [jpeg(round_ * 1000 + i + j) for j in range(3)]
                    try:
                        response = c.post(
                            "/gallery",
                            params={"gallery": "crash"},
                            files=[("images", ("x.jpg", d, "image/jpeg")) for d in images],
                            data={"camera_id": f"c{i % 3}", "timestamp": "2024-01-01T00:00:00Z"},
                        )
                    except httpx.TransportError:
                        return  # the server died mid-request: not acknowledged
                    if response.status_code == 201:
                        acknowledged.extend(response.json()["items"])
                    i += 3

        workers = [threading.Thread(target=burst) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(1.0, 3.0))
        server.kill()  # SIGKILL mid-burst
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert len(acknowledged) > 10

    server = Server(checkpoint, data_dir).start()
    try:
        with server.client() as c:
            counts = c.get("/gallery").json()
            assert counts["total"] >= len(acknowledged)
            for item in acknowledged:
                got = c.get(f"/gallery/{item['item_id']}")
                assert got.status_code == 200, item
                assert got.json() == item
                assert c.get(f"/gallery/{item['item_id']}/image").status_code == 200
            # the index agrees with the database: every item is found by its own vector
            for item in acknowledged[:: max(1, len(acknowledged) // 15)]:
                response = c.get(
                    "/search", params={"item_id": item["item_id"], "k": counts["total"]}
                )
                assert len(response.json()["results"]) == counts["total"] - 1
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(checkpoint: Path, tmp_path: Path) -> None:
    import signal

    server = Server(checkpoint, tmp_path / "data").start()
    boundary = "sona-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (("camera_id", "c"), ("timestamp", "2024-01-01T00:00:00Z"))
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + jpeg(3)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    body = b"".join(parts)
    half_sent, finish = threading.Event(), threading.Event()
    results: list[int] = []

    def held_body():
        yield body[:200]
        half_sent.set()
        finish.wait(30)
        yield body[200:]

    def ingest() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            response = c.post(
                "/gallery",
                content=held_body(),
                headers={
                    "content-type": f"multipart/form-data; boundary={boundary}",
                    "content-length": str(len(body)),
                },
            )
            results.append(response.status_code)

    worker = threading.Thread(target=ingest)
    worker.start()
    assert half_sent.wait(30)
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)  # the request is in flight, body half read
    time.sleep(0.5)
    finish.set()
    worker.join(timeout=60)
    assert results == [201], "the in-flight request completes during shutdown"
    # uvicorn drains, then re-raises SIGTERM so the exit status says what stopped it
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)
