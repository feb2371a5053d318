"""``sona serve``'s log: the service's own lines beside uvicorn's, as text or JSON, and a
request id in every access line, the response header and the problem details."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
import torch

from model import PRESETS, SONANet, save_checkpoint
from tests.service_support import Server


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny network labelled as the demo is, so the ready line must say DEMO."""
    torch.manual_seed(0)
    net = SONANet(dataclasses.replace(PRESETS["tiny"], num_classes=0)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo.pt", net, demo=True)


def log_lines(server: Server, wanted: str, timeout: float = 10) -> list[str]:
    """The log's lines once one holds ``wanted`` (access lines come after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = server.log.read_text().splitlines()
        if any(wanted in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_text_log_has_the_ready_line_and_request_ids(demo_checkpoint: Path, tmp_path: Path):
    server = Server(demo_checkpoint, tmp_path / "data", log_level="info").start()
    try:
        with server.client() as client:
            answer = client.get("/gallery/no-such-item")
            given = client.get("/healthz", headers={"X-Request-ID": "gateway-42"})
        lines = log_lines(server, "gateway-42")
    finally:
        server.stop()
    assert any(re.match(r"INFO: +ready: .*DEMO", line) for line in lines), lines
    request_id = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert answer.status_code == 404
    assert answer.json()["instance"] == f"urn:sona-reid:request:{request_id}"
    access = [line for line in lines if f"request_id={request_id}" in line]
    assert len(access) == 1 and '"GET /gallery/no-such-item HTTP/1.1" 404' in access[0]
    assert given.headers["X-Request-ID"] == "gateway-42"  # a gateway's id is kept
    assert any("/healthz" in line and "request_id=gateway-42" in line for line in lines)


def test_json_log_is_one_object_a_line(demo_checkpoint: Path, tmp_path: Path):
    server = Server(
        demo_checkpoint, tmp_path / "data", log_level="info", SONA_LOG_FORMAT="json"
    ).start()
    try:
        with server.client() as client:
            answer = client.post(
                "/embed", files={"image": ("x.jpg", b"not an image", "image/jpeg")}
            )
        request_id = answer.headers["X-Request-ID"]
        lines = log_lines(server, request_id)
    finally:
        server.stop()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    ready = [r for r in records if r["message"].startswith("ready:")]
    assert len(ready) == 1 and "DEMO" in ready[0]["message"] and ready[0]["level"] == "INFO"
    assert any(r["logger"].startswith("uvicorn") for r in records)
    access = [r for r in records if r.get("request_id") == request_id]
    assert len(access) == 1
    assert access[0]["logger"] == "sona.access" and access[0]["status"] == answer.status_code
    assert access[0]["method"] == "POST" and access[0]["path"] == "/embed"
    assert access[0]["duration_ms"] >= 0
    assert answer.json()["instance"].endswith(request_id)
