"""The demo on real people: ``sona demo --footage`` and ``SONA_DEMO_FOOTAGE`` with ``sona
serve`` (what ``make serve`` runs) on the first seconds of vtest.avi, the smallest settings.

Real parts throughout: the clip cut from Debian's vtest.avi, HOG, the tracker, the synthetic
demo model trained and adapted on the clip's tracks, a real service on 127.0.0.1 indexing the
clip through its API.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import cv2
import httpx
import pytest
from footage_support import VTEST, needs_vtest
from service_support import SONA, Server, free_port

SMALL = {
    "SONA_DEMO_IDENTITIES": "16",
    "SONA_DEMO_EPOCHS": "1",
    "SONA_DEMO_ADAPT_EPOCHS": "1",
    "SONA_DEVICE": "cpu",
}
READY = "SONA DEMO ready"


def cut(source: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source`` as an MJPEG AVI."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for _ in range(round(seconds * fps)):
        ok, frame = capture.read()
        assert ok
        writer.write(frame)
    writer.release()
    capture.release()
    return target


def wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.is_file() else ""
        if text in content:
            return content
        assert process.poll() is None, content[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} in {timeout} s: {log.read_text()[-3000:]}")


def test_a_missing_footage_file_is_one_line_and_status_2(tmp_path: Path) -> None:
    for argv, env in (
        ([SONA, "demo", "--footage", str(tmp_path / "none.avi")], {}),
        ([SONA, "serve", "--port", "1"], {"SONA_DEMO_FOOTAGE": str(tmp_path / "none.avi")}),
    ):
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "SONA_CHECKPOINT": "", "SONA_DATA_DIR": str(tmp_path), **env},
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"sona {argv[1]}: error: demo footage {tmp_path / 'none.avi'}: no such video file"
        ]
        assert not (tmp_path / "demo").exists()  # nothing was built


@needs_vtest
@pytest.mark.slow
def test_the_footage_demo_serves_the_clip_and_starts_again_from_what_it_kept(
    tmp_path: Path,
) -> None:
    clip = cut(VTEST, tmp_path / "hall.avi", 10)
    data = tmp_path / "data"
    port = free_port()
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SONA, "demo", "--footage", str(clip), "--port", str(port), "--log-level", "warning"],
            env={**os.environ, **SMALL, "SONA_DATA_DIR": str(data)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        first = wait_for(log, READY, process)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            ready = client.get("/readyz").json()
            assert ready["demo"] is True
            tracks = client.get("/gallery/tracks", params={"gallery": "default"}).json()["tracks"]
            assert len(tracks) >= 2, first[-2000:]
            assert {t["camera_id"] for t in tracks} == {"hall"}
            track = client.get(f"/gallery/tracks/{tracks[0]['track_id']}").json()
            item = track["items"][0]["item_id"]
            found = client.get("/search", params={"item_id": item, "k": 5}).json()["results"]
            assert found, found
            for result in found:  # items of the clip, each with where in it the person was
                assert result["source"] == "hall.avi"
                assert 0 <= result["frame"] < 100
                x, y, w, h = result["box"]
                assert 0 <= x < x + w <= 768 and 0 <= y < y + h <= 576
            assert {r["track_id"] for r in found} & {t["track_id"] for t in tracks}
            counts = client.get("/gallery").json()
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "adapting the demo model to" in first

    # SONA_DEMO_FOOTAGE with sona serve (make serve's command): what was built is reused
    server = Server(
        Path("unused"),
        data,
        log_dir=tmp_path,
        SONA_CHECKPOINT="",
        SONA_DEMO_FOOTAGE=str(clip),
        **SMALL,
    )
    server.start(timeout=300)
    try:
        second = wait_for(server.log, READY, server.process)
        with server.client() as client:
            assert client.get("/gallery").json() == counts  # nothing indexed twice
    finally:
        server.stop()
    assert "serving the model adapted to" in second
    assert "finding and tracking" not in second
    assert "already indexed" in second


def test_what_is_kept_is_named_for_the_clip_and_the_settings(tmp_path: Path) -> None:
    """A changed clip (its size or time) or a changed setting builds anew, in its own folder."""
    import argparse

    from cli.demo_footage import plan
    from cli.errors import UserError

    clip = tmp_path / "hall 1.avi"
    clip.write_bytes(b"x" * 10)
    settings = {"demo_identities": 16, "demo_epochs": 1, "demo_adapt_epochs": 1}
    args = argparse.Namespace(demo_footage=str(clip), demo_footage_seconds=None, **settings)
    first = plan(args, tmp_path / "data")
    assert first is not None and first.camera == "hall-1"
    assert first.root.parent == tmp_path / "data" / "demo"
    assert plan(args, tmp_path / "data") == first
    shorter = argparse.Namespace(**{**vars(args), "demo_footage_seconds": 5.0})
    more = argparse.Namespace(**{**vars(args), "demo_adapt_epochs": 2})
    names = {first.root.name, plan(shorter, tmp_path).root.name, plan(more, tmp_path).root.name}
    assert len(names) == 3
    os.utime(clip, ns=(0, 0))
    assert plan(args, tmp_path / "data").root != first.root
    assert plan(argparse.Namespace(**{**vars(args), "demo_footage": None}), tmp_path) is None
    for bad, says in (({"demo_footage_seconds": 0.0}, "> 0"), ({"demo_adapt_epochs": 0}, "1")):
        with pytest.raises(UserError, match=says):
            plan(argparse.Namespace(**{**vars(args), **bad}), tmp_path)
