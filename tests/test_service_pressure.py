"""Back-pressure and departed clients: the queue stays bounded and the network does no waste."""

from __future__ import annotations

import concurrent.futures
import re
import time

import httpx
import pytest

from tests.service_support import Server, jpeg, make_checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pressure")
    checkpoint = make_checkpoint(root / "tiny.pt")
    # a small queue, and batches that wait long for company: easy to fill, easy to leave
    srv = Server(
        checkpoint,
        root / "data",
        SONA_QUEUE_SIZE="3",
        SONA_MAX_WAIT_MS="1000",
        SONA_MAX_BATCH_SIZE="64",
    ).start()
    yield srv
    srv.stop()


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_more_images_than_the_queue_holds_is_413_not_a_503_that_never_succeeds(
    server: Server,
) -> None:
    with server.client() as c:
        response = c.post(
            "/gallery",
            files=[("images", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(5)],
            data={"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z"},
        )
        assert response.status_code == 413, response.text
        assert response.json()["type"].endswith("too-many-images")
        assert "SONA_QUEUE_SIZE" in response.json()["detail"]
        assert c.get("/gallery").json()["total"] == 0


def test_a_full_queue_answers_503_with_retry_after_and_stores_nothing(server: Server) -> None:
    """Three crops wait a second for company in a queue of three: one more is refused at once,
    before its image is even decoded."""
    rejected = metric(server, "sona_embed_rejected_total")
    with server.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        filling = pool.submit(
            c.post,
            "/gallery",
            files=[("images", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(3)],
            data={"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z"},
        )
        time.sleep(0.4)  # the three are queued, waiting for the batch's second
        response = c.post(
            "/gallery",
            files=[("images", ("late.jpg", jpeg(9), "image/jpeg"))],
            data={"camera_id": "c", "timestamp": "2024-01-01T00:00:00Z"},
        )
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert filling.result().status_code == 201
        assert c.get("/gallery").json()["total"] == 3
        assert metric(server, "sona_embed_rejected_total") == rejected + 1
        for item in filling.result().json()["items"]:  # leave the module's gallery empty
            assert c.delete(f"/gallery/{item['item_id']}").status_code == 204


def test_requests_whose_client_left_never_reach_the_network(server: Server) -> None:
    batches = metric(server, "sona_embed_batch_size_count")
    with pytest.raises(httpx.ReadTimeout):  # the batch waits 1 s; the client leaves at 0.3 s
        httpx.post(
            f"{server.url}/embed",
            files={"image": ("x.jpg", jpeg(1), "image/jpeg")},
            timeout=httpx.Timeout(30, read=0.3),
        )
    time.sleep(2.0)
    assert metric(server, "sona_embed_dropped_total") == 1
    assert metric(server, "sona_embed_batch_size_count") == batches, "no forward pass ran"
    # and the service still answers the next one
    response = httpx.post(
        f"{server.url}/embed", timeout=30, files={"image": ("x.jpg", jpeg(2), "image/jpeg")}
    )
    assert response.status_code == 200
