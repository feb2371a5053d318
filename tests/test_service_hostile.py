"""Hostile input against a real ``sona serve`` on 127.0.0.1: every refusal is a precise 4xx
problem, nothing is stored, and no request makes the process hold memory or disk out of
proportion to what it accepts."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.service_support import Server, jpeg, make_checkpoint, serve_fails

KEY = "hostile-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
FORM = {"camera_id": "c1", "timestamp": "2024-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("hostile") / "tiny.pt")


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = Server(
        checkpoint,
        tmp_path_factory.mktemp("hostile-data") / "data",
        SONA_API_KEYS=KEY,
        SONA_BODY_TIMEOUT_S="3",
        SONA_HEADER_TIMEOUT_S="3",
        SONA_MAX_HEADER_BYTES="16384",
    ).start()
    yield srv
    srv.stop()


def total(server: Server) -> int:
    with server.client(headers=AUTH) as c:
        return c.get("/gallery").json()["total"]


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    if code is not None:
        assert body["type"].endswith(code), body
    return body


def raw_exchange(server: Server, head: bytes, body_parts: list[bytes] = (), pause: float = 0.0):
    """Send bytes on a socket of our own; returns (what came back, seconds until it came)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        start = time.monotonic()
        s.sendall(head)
        answer = b""
        try:
            for part in body_parts:
                s.sendall(part)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we were done: what we want
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return answer, time.monotonic() - start


def problem_of(answer: bytes) -> tuple[int, dict, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}, head.lower()


def grey_png(side: int = 4000) -> bytes:
    """16 million grey pixels in about 20 KB: a decompression amplifier within the limits."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# the key is checked before the body is read


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(server: Server) -> None:
    """Content-Length promises 500 MB; the 401 comes after the headers alone, and the server
    closes the connection instead of reading (and spooling) the body."""
    head = (
        f"POST /gallery HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {500 * 2**20}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
    ).encode()
    answer, seconds = raw_exchange(server, head, [b"--xyz\r\n" + b"x" * 65536] * 4)
    status, body, headers = problem_of(answer)
    assert status == 401 and body["type"].endswith("unauthorized")
    assert b"application/problem+json" in headers and b"connection: close" in headers
    assert seconds < 10


def test_public_pages_are_open_and_data_is_not(server: Server) -> None:
    with server.client() as c:
        for path in ("/", "/docs", "/openapi.json", "/static/app.js", "/healthz", "/readyz"):
            assert c.get(path).status_code == 200, path
        for path in ("/gallery", "/metrics", "/search?query_id=x"):
            assert_problem(c.get(path), 401, "unauthorized")


def test_public_pages_can_be_closed(checkpoint: Path, tmp_path: Path) -> None:
    server = Server(
        checkpoint, tmp_path / "data", SONA_API_KEYS=KEY, SONA_PUBLIC_PAGES="false"
    ).start()
    try:
        with server.client() as c:
            for path in ("/", "/docs", "/openapi.json", "/static/app.js"):
                assert_problem(c.get(path), 401, "unauthorized")
            assert c.get("/healthz").status_code == 200
            assert c.get("/", headers=AUTH).status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# bad input: a precise 4xx, nothing stored


def test_a_truncated_jpeg_ending_with_eoi_is_refused(server: Server) -> None:
    whole = jpeg(3, size=(256, 128))
    cut = whole[: len(whole) // 3] + b"\xff\xd9"
    before = total(server)
    with server.client(headers=AUTH) as c:
        response = c.post("/gallery", files={"images": ("cut.jpg", cut, "image/jpeg")}, data=FORM)
        assert_problem(response, 422, "corrupt-image")
        assert_problem(
            c.post("/embed", files={"image": ("cut.jpg", cut, "image/jpeg")}), 422, "corrupt-image"
        )
    assert total(server) == before


@pytest.mark.parametrize(
    "metadata",
    ["[" * 10_000 + "]" * 10_000, '[{"camera_id": "c", "timestamp": ' + "9" * 5000 + "}]"],
    ids=["nested-10000-deep", "number-of-5000-digits"],
)
def test_hostile_metadata_is_a_422_not_a_500(server: Server, metadata: str) -> None:
    with server.client(headers=AUTH) as c:
        response = c.post(
            "/gallery",
            files={"images": ("a.jpg", jpeg(1), "image/jpeg")},
            data={"metadata": metadata},
        )
        assert_problem(response, 422, "invalid-metadata")
        assert c.get("/healthz").status_code == 200  # and the connection or process survived


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("camera_id", "lobby,2", "','"),
        ("camera_id", "lobby\x002", "control characters"),
        ("identity", "p\x07", "control characters"),
        ("track_id", "t\r\n1", "control characters"),
    ],
)
def test_labels_that_filters_could_not_name_or_that_hold_control_characters_are_refused(
    server: Server, field: str, value: str, reason: str
) -> None:
    before = total(server)
    with server.client(headers=AUTH) as c:
        response = c.post(
            "/gallery",
            files={"images": ("a.jpg", jpeg(2), "image/jpeg")},
            data={**FORM, field: value},
        )
        assert reason in assert_problem(response, 422, "invalid-metadata")["detail"]
    assert total(server) == before


def test_form_fields_that_are_not_utf8_are_refused_not_read_as_latin1(server: Server) -> None:
    before = total(server)
    with server.client(headers=AUTH) as c:
        for field in ("camera_id", "identity", "metadata"):
            response = c.post(
                "/gallery",
                files={"images": ("a.jpg", jpeg(4), "image/jpeg")},
                data={**FORM, field: "caf\u00e9".encode("latin-1")},  # b"caf\xe9"
            )
            assert field in assert_problem(response, 422)["detail"]
        accepted = c.post(  # the same text in UTF-8 is fine
            "/gallery",
            files={"images": ("a.jpg", jpeg(4), "image/jpeg")},
            data={**FORM, "identity": "caf\u00e9"},
        )
        assert accepted.status_code == 201
        assert accepted.json()["items"][0]["identity"] == "caf\u00e9"
        assert c.delete(f"/gallery/{accepted.json()['items'][0]['item_id']}").status_code == 204
    assert total(server) == before


def test_too_many_pixels_in_one_request_is_413(checkpoint: Path, tmp_path: Path) -> None:
    server = Server(
        checkpoint, tmp_path / "data", SONA_MAX_REQUEST_PIXELS=str(3 * 1000 * 1000)
    ).start()
    try:
        with server.client() as c:
            files = [("images", (f"{i}.png", grey_png(1000), "image/png")) for i in range(4)]
            response = c.post("/gallery", files=files, data=FORM)
            assert "pixels in all" in assert_problem(response, 413, "request-too-large")["detail"]
            assert c.get("/gallery").json()["total"] == 0
            files = [("images", (f"{i}.png", grey_png(1000), "image/png")) for i in range(3)]
            assert c.post("/gallery", files=files, data=FORM).status_code == 201
    finally:
        server.stop()


def test_a_deleted_crop_file_is_logged_and_named(checkpoint: Path, tmp_path: Path) -> None:
    server = Server(checkpoint, tmp_path / "data").start()
    try:
        with server.client() as c:
            item = c.post(
                "/gallery", files={"images": ("a.jpg", jpeg(5), "image/jpeg")}, data=FORM
            ).json()["items"][0]
            for crop in (tmp_path / "data" / "crops").rglob(f"{item['item_id']}.*"):
                crop.unlink()
            body = assert_problem(c.get(f"/gallery/{item['item_id']}/image"), 404, "crop-missing")
            assert "missing" in body["detail"]
            assert c.get(f"/gallery/{item['item_id']}").status_code == 200  # the item is there
    finally:
        server.stop()
    assert f"item {item['item_id']}: its crop" in server.log.read_text()


# ---------------------------------------------------------------------------------------------
# the connection: header size, slow clients, malformed requests, HEAD


def test_a_huge_header_block_is_431_without_buffering_it(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: "
    answer, _ = raw_exchange(server, head, [b"a" * 65536] * 32)  # 2 MiB of one header
    status, body, headers = problem_of(answer)
    assert status == 431 and body["type"].endswith("header-too-large")
    assert b"application/problem+json" in headers


def test_slow_headers_and_slow_bodies_are_cut_off(server: Server) -> None:
    trickle = [b"X-A: b\r\n"] * 20  # one header line a second: past the 3 s header timeout
    answer, seconds = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", trickle, 1.0)
    status, body, _ = problem_of(answer)
    assert status == 408 and body["type"].endswith("request-timeout")
    assert seconds < 12
    head = (
        "POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY
        + "\r\nContent-Length: 100000\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    answer, seconds = raw_exchange(server, head, [part] + [b"x" * 100] * 20, 1.0)  # 100 B/s
    status, body, _ = problem_of(answer)
    assert status == 408 and body["type"].endswith("request-timeout")
    assert seconds < 12


def test_malformed_http_gets_a_problem_not_text(server: Server) -> None:
    answer, _ = raw_exchange(server, b"GARBAGE\x00 / HTTP/9.9\r\n\r\n")
    status, body, headers = problem_of(answer)
    assert status == 400 and body["status"] == 400
    assert b"application/problem+json" in headers


def test_head_answers_like_get_without_a_body(server: Server) -> None:
    with server.client(headers=AUTH) as c:
        for path in ("/healthz", "/readyz", "/gallery", "/openapi.json"):
            got, head = c.get(path), c.head(path)
            assert head.status_code == got.status_code == 200, path
            assert head.content == b""
            assert head.headers["content-type"] == got.headers["content-type"]


def test_a_second_service_on_a_held_data_directory_says_so_in_one_line(
    server: Server, checkpoint: Path
) -> None:
    reason = serve_fails(SONA_CHECKPOINT=str(checkpoint), SONA_DATA_DIR=server.env["SONA_DATA_DIR"])
    assert "another store" in reason


# ---------------------------------------------------------------------------------------------
# memory: decompression amplifiers in parallel stay within a ceiling


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_decompression_amplifiers_in_parallel_keep_memory_bounded(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Eight parallel requests, each of four 16-megapixel grey PNGs (about 84 KB on the wire):
    64 million pixels a request, 512 million in all. Decoding them one image at a time at the
    size the network needs, within a process-wide budget of pixels in flight, keeps the
    server's peak resident memory within 600 MiB of where it was (before: several GB)."""
    server = Server(checkpoint, tmp_path / "data").start()
    try:
        with server.client() as c:  # warm: the first requests allocate what every one needs
            for i in range(3):
                c.post("/gallery", files={"images": ("w.jpg", jpeg(i), "image/jpeg")}, data=FORM)
        before = peak_rss_mib(server.process.pid)
        png = grey_png()
        answers: list[int] = []

        def send() -> None:
            with server.client(timeout=300) as c:
                files = [("images", (f"{i}.png", png, "image/png")) for i in range(4)]
                answers.append(c.post("/gallery", files=files, data=FORM).status_code)

        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = peak_rss_mib(server.process.pid)
        assert set(answers) <= {201, 503}, answers  # stored, or told to come back
        assert 201 in answers
        assert after - before < 600, (before, after)
    finally:
        server.stop()
