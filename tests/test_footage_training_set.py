"""``sona footage add --training-set DIR``: the tracks it indexes also written as a training set,
the same folder ``sona footage export-training`` writes from the same footage; into a real
``sona serve``, with made-up footage and its true boxes as a MOTChallenge det.txt."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.adapt_support import refused, sona
from tests.footage_support import write_det, write_video
from tests.service_support import Server, make_checkpoint

START = "2024-05-01T08:00:00+02:00"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("footage-training")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_MAX_WAIT_MS="20").start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the runs' state files


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def test_indexed_tracks_are_written_as_export_training_writes_them(
    server: Server, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "lobby.avi", frames=30)
    det = write_det(tmp_path / "lobby.txt", frames=30)
    common = ("--camera", "lobby", "--start", START, "--detections", str(det), "--quiet")
    added = sona(
        "footage", "add", str(video), "--gallery", "lobby", "--url", server.url,
        "--training-set", str(tmp_path / "from-add"), "--training-crops", "6", *common,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "2 indexed" in added.stdout and "training set: 2 tracks with 12 crops" in added.stdout
    exported = sona(
        "footage", "export-training", str(video), "--output", str(tmp_path / "exported"),
        "--crops-per-track", "6", *common,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    ours = json.loads((tmp_path / "from-add" / "tracks.json").read_text())
    theirs = json.loads((tmp_path / "exported" / "tracks.json").read_text())
    assert ours == theirs and len(ours["tracks"]) == 2
    assert files(tmp_path / "from-add") == files(tmp_path / "exported")
    gallery = httpx.get(f"{server.url}/gallery").json()["galleries"]
    assert [g["count"] for g in gallery if g["gallery"] == "lobby"] == [8]  # 2 tracks x 4 crops


def test_bad_training_set_uses_are_one_line_and_index_nothing(
    server: Server, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "hall.avi", frames=30)
    det = write_det(tmp_path / "hall.txt", frames=30)
    base = ("footage", "add", str(video), "--camera", "hall", "--start", START, "--quiet")
    base += ("--gallery", "hall", "--url", server.url, "--detections", str(det))
    taken = sona(
        "footage", "export-training", str(video), "--output", str(tmp_path / "set"),
        "--camera", "hall", "--detections", str(det), "--quiet",
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    before = (tmp_path / "set" / "tracks.json").read_text()
    refused(sona(*base, "--training-set", str(tmp_path / "set")), "already in")
    assert (tmp_path / "set" / "tracks.json").read_text() == before
    refused(sona(*base, "--training-set", str(tmp_path / "x"), "--training-crops", "0"), "1 to")
    stream = ("footage", "add", "rtsp://127.0.0.1:1/cam", "--camera", "hall", "--quiet")
    refused(sona(*stream, "--url", server.url, "--training-set", "x"), "not live streams")
    gallery = httpx.get(f"{server.url}/gallery").json()["galleries"]
    assert "hall" not in {g["gallery"] for g in gallery}
    assert not (tmp_path / "x").exists()
