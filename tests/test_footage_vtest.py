"""Real footage end to end: the first 20 s of vtest.avi (a surveillance camera, people walking)
through ``sona footage add --detector hog`` into a real ``sona serve``, killed part way and
started again; then its tracks searched. Skipped where opencv-doc is not installed."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.footage_support import VTEST, needs_vtest
from tests.service_support import SONA, Server, make_checkpoint

pytestmark = [needs_vtest, pytest.mark.slow]
START = "2024-05-01T08:00:00-04:00"
SECONDS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("vtest")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_MAX_WAIT_MS="20").start()
    yield srv
    srv.stop()


def done_tracks(state: Path) -> dict[str, list[str]]:
    out = {}
    if state.is_file():
        for line in state.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry["status"] == "done":
                out[entry["track"]] = entry["items"]
    return out


def test_vtest_killed_and_resumed_indexes_each_track_once(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    command = [
        SONA,
        "footage",
        "add",
        str(VTEST),
        "--camera=street",
        f"--start={START}",
        "--gallery=vtest",
        f"--url={server.url}",
        "--detector=hog",
        "--hog-upscale=1.25",  # people from about 85 pixels; keeps the test within a minute
        f"--duration={SECONDS}",
        f"--state={state}",
        "--quiet",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(done_tracks(state)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, "it should still have been running"
    before = done_tracks(state)
    assert len(before) >= 2

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr
    assert "200 frames (20.0 s of video" in second.stdout
    tracks = done_tracks(state)
    assert set(before) <= set(tracks) and len(tracks) >= 5
    assert all(tracks[t] == before[t] for t in before)  # kept, not sent again

    counts = httpx.get(f"{server.url}/gallery").json()["galleries"]
    (gallery,) = [g for g in counts if g["gallery"] == "vtest"]
    assert gallery["count"] == sum(len(v) for v in tracks.values())  # nothing twice
    start = datetime.fromisoformat(START)
    for track, ids in tracks.items():
        body = httpx.get(f"{server.url}/gallery/tracks/{track}", params={"gallery": "vtest"})
        body = body.json()
        assert sorted(i["item_id"] for i in body["items"]) == sorted(ids)
        assert 1 <= body["count"] <= 4 and body["cameras"] == ["street"]
        for item in body["items"]:
            when = datetime.fromisoformat(item["timestamp"])
            offset = (when - start).total_seconds()
            assert 0 <= offset < SECONDS and abs(offset * 10 - round(offset * 10)) < 1e-3
            assert when.utcoffset() == start.utcoffset()
            # where it came from: the file, the frame of its time, a box inside the frame
            assert item["source"] == "vtest.avi" and item["frame"] == round(offset * 10)
            x, y, w, h = item["box"]
            assert x >= 0 and y >= 0 and w > 0 and h >= 80 and x + w <= 768 and y + h <= 576
        seen = [datetime.fromisoformat(body[k]) for k in ("first_seen", "last_seen")]
        assert seen[0] <= seen[1]
        crop = httpx.get(f"{server.url}/gallery/{ids[0]}/image").content
        with Image.open(io.BytesIO(crop)) as image:
            assert image.format == "JPEG" and image.height >= 80 and image.height > image.width

    query = next(iter(tracks))
    found = httpx.get(
        f"{server.url}/search",
        params={"gallery": "vtest", "track_id": query, "group_by": "track", "k": 5},
    ).json()["results"]
    labels = [r["track_id"] for r in found]
    assert query not in labels and len(set(labels)) == len(labels) == min(5, len(tracks) - 1)
