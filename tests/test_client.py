"""The client's one retry policy against a real HTTP server that answers from a script, and
the promise that the client package loads neither torch nor the service."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import ClassVar

import pytest

from client import RetryPolicy, SonaClient, SonaError, SonaUnreachable
from client.media import IMAGE_MEDIA_TYPES, UPLOAD_MEDIA_TYPES, media_type_for, suffix_for
from client.retry import retry_after

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
ITEM = {
    "item_id": "i1",
    "gallery": "g",
    "camera_id": "c1",
    "timestamp": "2024-05-01T08:00:00+00:00",
    "identity": None,
    "track_id": "t1",
}
TRACK = {
    "track_id": "t1",
    "gallery": "g",
    "camera_id": "c1",
    "cameras": ["c1"],
    "first_seen": ITEM["timestamp"],
    "last_seen": ITEM["timestamp"],
    "count": 1,
    "items": [ITEM],
}


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next step: ``(status, headers, body)``, or ``None`` to
    read the request and drop the connection without answering (a lost answer)."""

    script: ClassVar[list] = []
    seen: ClassVar[list] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path.split('?')[0]}")
        self.rfile.read(int(self.headers.get("content-length") or 0))
        step = self.script.pop(0) if self.script else (200, {}, {"status": "ready"})
        if step is None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, headers, body = step
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Scripted.seen, _Scripted.script = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("3") == 3.0 and retry_after("0.5") == 0.5
    later = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    assert retry_after(later, now=NOW) == pytest.approx(7.0)
    earlier = format_datetime(NOW - timedelta(seconds=7), usegmt=True)
    assert retry_after(earlier, now=NOW) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_backoff_doubles_with_jitter_below_it_and_is_capped() -> None:
    policy = RetryPolicy(retries=8, backoff_s=1.0, max_wait_s=5.0, jitter=0.5)
    for attempt in range(3):
        waits = {policy.wait(attempt) for _ in range(50)}
        full = 2.0**attempt
        assert all(full / 2 <= w <= full for w in waits) and len(waits) > 1
    assert policy.wait(6) <= 5.0 and policy.wait(0, "60") == 5.0
    assert RetryPolicy(jitter=0, backoff_s=0.1).wait(1) == pytest.approx(0.2)


def test_503_and_429_are_waited_for_as_retry_after_says(url: str) -> None:
    _Scripted.script = [
        (503, {"Retry-After": "2"}, {}),
        (429, {"Retry-After": "0.5"}, {}),
        (200, {}, {"status": "ready"}),
    ]
    waits: list[float] = []
    with SonaClient(url, retries=3, sleep=waits.append) as client:
        assert client.ready() == {"status": "ready"}
    assert waits == [2.0, 0.5]
    _Scripted.seen, _Scripted.script = [], [(503, {"Retry-After": "1"}, {"detail": "busy"})] * 3
    with SonaClient(url, retries=2, sleep=waits.append) as client, pytest.raises(SonaError) as busy:
        client.ready()
    assert busy.value.status == 503 and len(_Scripted.seen) == 3


def test_connections_are_retried_but_a_lost_upload_is_not_sent_again(url: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    waits: list[float] = []
    with (
        SonaClient(dead, retries=2, backoff_s=0.1, jitter=0, sleep=waits.append) as client,
        pytest.raises(SonaUnreachable, match="cannot reach the service"),
    ):
        client.counts()
    assert waits == [0.1, 0.2]
    _Scripted.script = [None, (200, {}, {"status": "ready"})]  # a lost answer: a read goes again
    with SonaClient(url, retries=2, sleep=waits.append) as client:
        assert client.ready() == {"status": "ready"}
    _Scripted.seen, _Scripted.script = [], [None, (200, {}, {})]  # an upload may have been stored
    with (
        SonaClient(url, retries=2, sleep=waits.append) as client,
        pytest.raises(SonaUnreachable, match="no answer"),
    ):
        client.embed(b"x")
    assert _Scripted.seen == ["POST /embed"]


def test_an_http_date_retry_after_is_waited_for(url: str) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    _Scripted.script = [(503, {"Retry-After": soon}, {"detail": "busy"})]
    waits: list[float] = []
    with SonaClient(url, retries=2, sleep=waits.append) as client:
        assert client.ready() == {"status": "ready"}
    assert len(waits) == 1 and 1.0 < waits[0] <= 3.0


def test_a_proxy_502_or_504_is_retried_for_a_read_but_not_for_a_write(url: str) -> None:
    _Scripted.script = [(502, {}, {}), (504, {}, {}), (200, {}, {"status": "ready"})]
    with SonaClient(url, retries=3, sleep=lambda s: None) as client:
        assert client.ready() == {"status": "ready"}
    assert len(_Scripted.seen) == 3
    _Scripted.seen, _Scripted.script = [], [(504, {}, {"detail": "gateway timeout"})]
    with SonaClient(url, retries=3, sleep=lambda s: None) as client, pytest.raises(SonaError) as e:
        client.add([b"x"], camera_id="c1", timestamp=NOW)
    assert e.value.status == 504 and _Scripted.seen == ["POST /gallery"]


def test_a_write_refused_with_429_is_sent_again(url: str) -> None:
    _Scripted.script = [(429, {"Retry-After": "0"}, {}), (201, {}, {"items": [ITEM], "count": 1})]
    with SonaClient(url, retries=1, sleep=lambda s: None) as client:
        items = client.add([b"x"], camera_id="c1", timestamp=NOW)
    assert [i.item_id for i in items] == ["i1"] and _Scripted.seen == ["POST /gallery"] * 2


def test_a_track_whose_answer_was_lost_is_looked_up_not_sent_twice(url: str) -> None:
    meta = [{"camera_id": "c1", "timestamp": NOW, "track_id": "t1"}]
    _Scripted.script = [None, (200, {}, TRACK)]  # stored, but the answer never came
    with SonaClient(url, retries=3, sleep=lambda s: None) as client:
        items = client.add_track("t1", [b"x"], meta, gallery="g")
    assert [i.item_id for i in items] == ["i1"]
    assert _Scripted.seen == ["POST /gallery", "GET /gallery/tracks/t1"]
    # not stored: the lookup finds nothing and the crops go again
    _Scripted.seen = []
    _Scripted.script = [None, (404, {}, {"detail": "no track"}), (201, {}, TRACK)]
    with SonaClient(url, retries=3, sleep=lambda s: None) as client:
        assert [i.item_id for i in client.add_track("t1", [b"x"], meta, gallery="g")] == ["i1"]
    assert _Scripted.seen == ["POST /gallery", "GET /gallery/tracks/t1", "POST /gallery"]


def test_track_reads_answer_none_for_an_unknown_track(url: str) -> None:
    _Scripted.script = [(404, {}, {"detail": "no track"}), (200, {}, TRACK)]
    with SonaClient(url, retries=0) as client:
        assert client.track("t1", gallery="g") is None
        track = client.track("t1", gallery="g")
    assert track is not None and track.camera_id == "c1" and track.items[0].track_id == "t1"


def test_an_unreachable_service_is_one_error(url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with (
        SonaClient(dead, retries=1, sleep=lambda s: None) as client,
        pytest.raises(SonaUnreachable, match="cannot reach the service"),
    ):
        client.healthy()


def test_one_table_of_suffixes_and_media_types() -> None:
    assert media_type_for("a.JPG") == "image/jpeg" and media_type_for("a") == (
        "application/octet-stream"
    )
    assert suffix_for("image/png") == ".png" and suffix_for("text/plain") == ".bin"
    assert set(UPLOAD_MEDIA_TYPES) < set(IMAGE_MEDIA_TYPES) and ".bmp" not in UPLOAD_MEDIA_TYPES


def test_the_client_package_loads_neither_torch_nor_the_service() -> None:
    code = (
        "import sys, client, client.media, client.retry, footage.upload\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', "
        "'service', 'model', 'numpy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
