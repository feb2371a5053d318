"""A live stream end to end: Debian's ffmpeg sends vtest.avi as MPEG-TS over UDP on 127.0.0.1
in real time; ``sona footage add udp://...`` indexes it into a real ``sona serve``; the
stream is stopped and started again (the command reconnects), then SIGTERM ends the command
(open tracks sent, exit 0); a second run with the same state sends nothing twice. Skipped
where ffmpeg or vtest.avi is absent (``make test`` installs both in CI)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from footage.replay import free_udp_port, replay
from tests.footage_support import VTEST, needs_vtest
from tests.service_support import SONA, Server, make_checkpoint

pytestmark = [
    needs_vtest,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg absent: apt-get install"),
]


def records(state: Path) -> list[dict]:
    out = []
    if state.is_file():
        for line in state.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("status") == "done":
                out.append(entry)
    return out


def sessions(entries: list[dict]) -> set[str]:
    return {e["track"].split("-")[1] for e in entries}


def wait_for(condition, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("live")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_MAX_WAIT_MS="20").start()
    yield srv
    srv.stop()


def count(server: Server, gallery: str) -> int:
    galleries = httpx.get(f"{server.url}/gallery").json()["galleries"]
    return sum(g["count"] for g in galleries if g["gallery"] == gallery)


def test_a_live_stream_dropped_and_back_is_indexed_once_and_stops_cleanly(
    server: Server, tmp_path: Path
) -> None:
    port = free_udp_port()
    state = tmp_path / "live.jsonl"
    url = f"udp://127.0.0.1:{port}"
    command = [
        SONA,
        "footage",
        "add",
        url,
        "--camera=door",
        "--gallery=live",
        f"--url={server.url}",
        f"--state={state}",
        "--flush-every=5",
        "--quiet",
    ]
    stream = replay(VTEST, port)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(records(state)) >= 2, 420, run)  # generous: a busy machine
        stream.terminate()  # the camera drops...
        stream.wait(10)
        time.sleep(15)  # longer than the command's 10 s read timeout: a drop, not a hiccup
        stream = replay(VTEST, port)  # ...and comes back: the command reconnects by itself
        first = sessions(records(state))
        wait_for(lambda: sessions(records(state)) - first, 420, run)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    finally:
        stream.terminate()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert "connections" in out
    done = records(state)
    assert count(server, "live") == sum(len(e["items"]) for e in done)
    for entry in done:  # crops from the wall clock: the person left just before it was sent
        lag = datetime.fromisoformat(entry["sent"]) - datetime.fromisoformat(entry["last_seen"])
        assert 0 <= lag.total_seconds() < 120
    track = done[0]["track"].rsplit("/", 1)[0]  # the state names a track's parts id/N
    body = httpx.get(f"{server.url}/gallery/tracks/{track}", params={"gallery": "live"}).json()
    assert body["camera_id"] == "door" and body["count"] >= 1

    # started again with the same state: new tracks only, never one sent before
    stream = replay(VTEST, port)
    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(records(state)) > len(done), 420, again)
        again.send_signal(signal.SIGINT)
        _, err = again.communicate(timeout=60)
    finally:
        stream.terminate()
        if again.poll() is None:
            again.kill()
    assert again.returncode == 0, err
    later = records(state)
    tracks = [e["track"] for e in later]
    assert len(tracks) == len(set(tracks))
    assert count(server, "live") == sum(len(e["items"]) for e in later)


def test_a_stream_that_cannot_be_opened_is_one_line_and_exit_2(
    server: Server, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [
            SONA,
            "footage",
            "add",
            f"http://user:secret@127.0.0.1:{port}/cam",
            "--camera=gone",
            f"--url={server.url}",
            f"--state={tmp_path / 's.jsonl'}",
            "--retries=1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "could not be opened" in result.stderr and "secret" not in result.stderr
