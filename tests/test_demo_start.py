"""``sona serve`` without a checkpoint: the port is open while the demo is being built, and
``/readyz`` and the page say what is being prepared and how far along it is."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service_support import Server

pytestmark = pytest.mark.slow


def test_the_port_opens_at_once_and_readyz_tells_the_progress(tmp_path: Path) -> None:
    server = Server(
        Path("unused"),
        tmp_path / "data",
        SONA_CHECKPOINT="",  # none: the demo
        SONA_DEMO_IDENTITIES="16",
        SONA_DEMO_EPOCHS="2",
    )
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            server.start(timeout=600)
            started.append(None)
        except BaseException as exc:  # reported below
            started.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    answers: list[dict] = []
    page = None
    try:
        while thread.is_alive():
            try:
                response = httpx.get(f"{server.url}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if response.status_code == 503:
                answers.append(response.json())
                if page is None:
                    page = httpx.get(f"{server.url}/", timeout=5)
            time.sleep(0.3)
        thread.join()
        assert started == [None], started
        ready = httpx.get(f"{server.url}/readyz", timeout=5).json()
        with server.client() as client:  # the demo gallery follows through the API
            deadline = time.monotonic() + 120
            while client.get("/gallery").json()["total"] == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            total = client.get("/gallery").json()["total"]
    finally:
        server.stop()
    assert ready["demo"] is True
    assert total > 0
    assert page is not None and page.status_code == 200  # the page too, while preparing
    stages = [a["progress"]["stage"] for a in answers]
    assert any("training the demo model" in s for s in stages), stages
    training = [a["progress"] for a in answers if a["progress"]["stage"].startswith("training")]
    fractions = [p["fraction"] for p in training]
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert all(a["status"] == 503 and a["detail"].startswith("not ready: ") for a in answers)
    assert all(a["type"].endswith("starting") for a in answers)
