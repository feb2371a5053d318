"""``sona footage add`` into a real ``sona serve``: made-up footage with its true boxes as a
MOTChallenge det.txt (fast and exact), bad input refused with one line, resumed runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cli.main import main
from footage.decode import open_sources
from footage.detect import Detection, Detector
from footage.ingest import Settings, ingest
from footage.state import RunState
from footage.upload import TrackUploader
from tests.footage_support import FPS, people_boxes, write_det, write_video
from tests.service_support import SONA, Server, make_checkpoint

START = "2024-05-01T08:00:00+02:00"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("footage")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_MAX_WAIT_MS="20").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clip")
    return write_video(root / "walk.avi", frames=30), write_det(root / "det.txt", frames=30)


def sona_process(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """The installed ``sona`` in its own process."""
    return subprocess.run(
        [SONA, "footage", "add", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )


def footage(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """The same command in this process (``cli.main.main``): no interpreter and torch start
    per call, which would cost seconds each on two cores."""
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["footage", "add", *args, "--quiet"])
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def refused(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr


def items(server: Server, gallery: str) -> int:
    counts = httpx.get(f"{server.url}/gallery").json()["galleries"]
    return sum(g["count"] for g in counts if g["gallery"] == gallery)


def test_det_txt_footage_becomes_two_tracks_with_stream_times(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    video, det = clip
    result = sona_process(
        str(video),
        "--camera=gate-1",
        f"--start={START}",
        "--gallery=walk",
        f"--url={server.url}",
        f"--detections={det}",
        "--crops-per-track=3",
        cache=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "2 tracks in 30 frames" in result.stdout and "2 indexed with 6 crops" in result.stdout
    (state,) = (tmp_path / "sona" / "footage").glob("*.jsonl")
    done = [json.loads(x) for x in state.read_text().splitlines()]
    tracks = [d["track"] for d in done if d["status"] == "done"]
    assert len(tracks) == 2 and all(t.startswith("gate-1-20240501T080000-") for t in tracks)
    start = datetime.fromisoformat(START)
    for track in tracks:
        body = httpx.get(f"{server.url}/gallery/tracks/{track}", params={"gallery": "walk"}).json()
        assert body["count"] == 3 and body["camera_id"] == "gate-1"
        times = [datetime.fromisoformat(i["timestamp"]) for i in body["items"]]
        assert all(t.utcoffset() == timedelta(hours=2) for t in times)  # the camera's zone
        frames = [(t - start).total_seconds() * FPS for t in times]
        assert all(abs(f - round(f)) < 1e-3 and 0 <= f < 30 for f in frames)  # frame times
        assert frames[-1] - frames[0] >= 10  # spread over the walk, not one moment
        image = httpx.get(f"{server.url}/gallery/{body['items'][0]['item_id']}/image")
        assert image.headers["content-type"] == "image/jpeg"
    # the same command again: recorded as complete, nothing sent twice
    again = footage(
        str(video),
        "--camera=gate-1",
        f"--start={START}",
        "--gallery=walk",
        f"--url={server.url}",
        f"--detections={det}",
        "--crops-per-track=3",
        cache=tmp_path,
    )
    assert again.returncode == 0 and "already indexed" in again.stdout
    assert items(server, "walk") == 6


def test_an_interrupted_run_resumes_without_indexing_a_track_twice(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    video, det = clip
    state = tmp_path / "run.jsonl"
    args = [
        str(video),
        "--camera=gate-2",
        f"--start={START}",
        "--gallery=resume",
        f"--url={server.url}",
        f"--detections={det}",
        f"--state={state}",
    ]
    assert footage(*args, cache=tmp_path).returncode == 0
    full = items(server, "resume")
    assert full == 8
    # as if stopped after sending the second track and before writing it down
    lines = state.read_text().splitlines()
    second = next(n for n, x in enumerate(lines) if '"pending"' in x and x.endswith('0002"}'))
    state.write_text("\n".join(lines[: second + 1]) + "\n")
    resumed = footage(*args, cache=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 indexed" in resumed.stdout and "2 already indexed" in resumed.stdout
    assert items(server, "resume") == full
    # stopped before the second track was sent: it is sent, the first is not
    state.write_text("\n".join(lines[:second]) + "\n")
    resumed = footage(*args, cache=tmp_path)
    assert "1 indexed" in resumed.stdout and "1 already indexed" in resumed.stdout
    assert items(server, "resume") == full + 4  # the second track's crops, sent again


def test_bad_input_is_one_line_and_indexes_nothing(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    video, det = clip
    base = ["--camera=c9", f"--start={START}", "--gallery=bad", f"--url={server.url}"]
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    refused(footage(str(cut), *base, f"--detections={det}", cache=tmp_path), "truncated")
    other = write_det(tmp_path / "other.txt", frames=30, shift=20)
    refused(
        footage(str(video), *base, f"--detections={other}", cache=tmp_path),
        "names frame 50 but walk.avi has 30 frames",
    )
    blank = write_video(tmp_path / "blank.avi", frames=8, blank=True)
    refused(footage(str(blank), *base, cache=tmp_path), "no people found")
    refused(
        footage(str(video), *base, f"--detections={det}", "--min-height=500", cache=tmp_path),
        "none had a crop at least 500 pixels tall",
    )
    naive = ["--camera=c9", "--start=2024-05-01T08:00:00", f"--url={server.url}"]
    refused(footage(str(video), *naive, f"--detections={det}", cache=tmp_path), "UTC offset")
    missing = f"--weights={tmp_path / 'absent.pth'}"  # offline use: the file must be there
    refused(
        footage(str(video), *base, "--detector=torchvision", missing, cache=tmp_path),
        "no such weights file",
    )
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.avi", "b.avi"):
        (folder / name).write_bytes(video.read_bytes())
    refused(footage(str(folder), *base, f"--detections={det}", cache=tmp_path), "one video")
    assert items(server, "bad") == 0
    closed = [*base[:3], "--url=http://127.0.0.1:9", "--retries=0"]
    refused(footage(str(video), *closed, f"--detections={det}", cache=tmp_path), "cannot reach")


def test_torchvision_detector_wiring_through_the_cli_with_randomly_initialised_weights(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    """A randomly initialised Faster R-CNN (biased to say 'person'), nothing downloaded: the
    command loads the file, detects and tracks people; what it finds means nothing, so none
    of it is tall enough to index here."""
    import torch
    import torchvision

    torch.manual_seed(0)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        net.roi_heads.box_predictor.cls_score.bias[1] = 10.0
    weights = tmp_path / "random-init.pth"
    torch.save(net.state_dict(), weights)
    video, _ = clip
    result = footage(
        str(video),
        "--camera=rnd",
        f"--start={START}",
        "--gallery=random-init",
        f"--url={server.url}",
        f"--detector=torchvision:{name}",
        f"--weights={weights}",
        "--device=cpu",
        "--duration=0.5",
        "--exhaustive",  # five frames: each one searched whole, so that tracks form
        "--min-height=1000",  # its boxes are noise: track them, index none of them
        cache=tmp_path,
    )
    refused(result, "people tracked but none had a crop at least 1000 pixels tall")
    assert items(server, "random-init") == 0


class TrueBoxes(Detector):
    """The made-up clips' true boxes: what a perfect detector would find in every clip."""

    name = "true boxes"

    def detect(self, index: int, image) -> list[Detection]:
        return [Detection(x, y, w, h, 1.0) for x, y, w, h in people_boxes(index)]


def test_a_folder_of_clips_is_indexed_as_consecutive_footage(
    server: Server, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "part1.avi", frames=30)
    write_video(folder / "part2.avi", frames=30)
    start = datetime.fromisoformat(START)
    uploader = TrackUploader(server.url, "parts")
    try:
        report = ingest(
            open_sources(folder),
            TrueBoxes(),
            uploader,
            Settings(camera="dock", start=start, crops_per_track=2),
            RunState(tmp_path / "state.jsonl"),
            key="k",
            progress=False,
        )
    finally:
        uploader.close()
    assert (report.clips, report.frames, report.tracks, report.indexed) == (2, 60, 4, 4)
    assert report.video_seconds == pytest.approx(6.0)
    spans = []
    for track in sorted(report.items):
        body = httpx.get(f"{server.url}/gallery/tracks/{track}", params={"gallery": "parts"})
        spans.append(
            [
                (datetime.fromisoformat(body.json()[k]) - start).total_seconds()
                for k in ("first_seen", "last_seen")
            ]
        )
    assert all(0 <= a < b < 3 for a, b in spans[:2])  # the first clip: 0 to 3 s
    assert all(3 <= a < b < 6 for a, b in spans[2:])  # the second starts where it ended


def test_a_site_csv_runs_its_cameras_in_parallel_each_resumable(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    video, det = clip
    for name in ("east.avi", "west.avi"):
        (tmp_path / name).write_bytes(video.read_bytes())
    sites = tmp_path / "cameras.csv"
    sites.write_text(
        "camera_id,source,start\n"
        f"east,{tmp_path / 'east.avi'},{START}\n"
        f"west,{tmp_path / 'west.avi'},2024-05-01T09:00:00+02:00\n"
    )
    args = [f"--sites={sites}", "--gallery=site", f"--url={server.url}", f"--detections={det}"]
    first = sona_process(*args, "--workers=2", cache=tmp_path)  # real worker processes
    assert first.returncode == 0, first.stderr
    assert "site: 2 cameras, 2 done" in first.stdout
    assert items(server, "site") == 16  # 2 tracks of 4 crops per camera
    states = sorted((tmp_path / "sona" / "footage").glob("*.jsonl"))
    assert len(states) == 2  # one state per camera
    counts = httpx.get(f"{server.url}/gallery").json()["galleries"]
    (site,) = [g for g in counts if g["gallery"] == "site"]
    assert {c["camera_id"]: c["count"] for c in site["cameras"]} == {"east": 8, "west": 8}
    again = sona_process(*args, cache=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already indexed") == 2
    assert items(server, "site") == 16


@pytest.mark.parametrize(
    ("csv_text", "extra", "said"),
    [
        ("camera_id,source,start,zoom\n", [], "unknown column 'zoom'"),
        ("camera_id,start\n", [], "no 'source' column"),
        ("camera_id,source,start\na,{v},{s}\na,{v},{s}\n", [], "camera 'a' appears twice"),
        ("camera_id,source,start\na,{v},yesterday\n", [], "not an ISO 8601 time"),
        ("camera_id,source,start\na,{v},{s}\n", ["--workers=0"], "--workers must be at least 1"),
        ("camera_id,source,start\na,{v},{s}\n", ["--camera=b"], "give no VIDEO and no --camera"),
    ],
)
def test_bad_site_input_is_one_line_and_changes_nothing(
    server: Server, clip: tuple[Path, Path], tmp_path: Path, csv_text, extra, said
) -> None:
    video, _ = clip
    sites = tmp_path / "bad.csv"
    sites.write_text(csv_text.format(v=video, s=START))
    result = footage(
        f"--sites={sites}", "--gallery=badsite", f"--url={server.url}", *extra, cache=tmp_path
    )
    refused(result, said)
    assert items(server, "badsite") == 0


def test_several_camera_equals_source_arguments_make_a_site(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    video, _ = clip
    result = footage(
        f"--camera=a={video}",
        f"--camera=a={video}",
        f"--start={START}",
        f"--url={server.url}",
        cache=tmp_path,
    )
    refused(result, "camera 'a' appears twice")
    refused(footage(str(video), f"--camera=a={video}", cache=tmp_path), "CAMERA=SOURCE is for")


def test_ssdlite_by_name_with_randomly_initialised_weights_runs_offline(
    server: Server, clip: tuple[Path, Path], tmp_path: Path
) -> None:
    """torchvision:ssdlite320_mobilenet_v3_large from a --weights file (random init, biased
    to say 'person': speed and wiring only, its boxes mean nothing)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    name = "ssdlite320_mobilenet_v3_large"
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        for layer in net.head.classification_head.module_list:
            layer[-1].bias[1::91] = 10.0  # every anchor says "person"
    weights = tmp_path / "random-init-ssdlite.pth"
    torch.save(net.state_dict(), weights)
    video, _ = clip
    result = footage(
        str(video),
        "--camera=ssd",
        f"--start={START}",
        "--gallery=random-ssd",
        f"--url={server.url}",
        f"--detector=torchvision:{name}",
        f"--weights={weights}",
        "--device=cpu",
        "--duration=0.5",
        "--exhaustive",
        "--min-height=1000",
        cache=tmp_path,
    )
    refused(result, "people tracked but none had a crop at least 1000 pixels tall")
    assert items(server, "random-ssd") == 0


def test_unknown_detector_names_are_one_line(clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, _ = clip
    common = [str(video), "--camera=x", f"--start={START}", "--url=http://127.0.0.1:9"]
    refused(
        footage(*common, "--detector=torchvision:yolo_v99", cache=tmp_path),
        "torchvision has no such COCO detector",
    )
    refused(footage(*common, "--detector=sift", cache=tmp_path), "hog or torchvision:NAME")


def test_offline_without_weights_says_what_to_fetch_and_where(
    clip: tuple[Path, Path], tmp_path: Path
) -> None:
    """No network (an unreachable proxy) and an empty torch cache: one line naming the file
    to fetch and the cache path to put it at."""
    video, _ = clip
    result = subprocess.run(
        [
            SONA,
            "footage",
            "add",
            str(video),
            "--camera=x",
            f"--start={START}",
            "--url=http://127.0.0.1:9",
            "--detector=torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "TORCH_HOME": str(tmp_path / "torch"),
            "https_proxy": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "XDG_CACHE_HOME": str(tmp_path),
        },
    )
    refused(result, "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth and put it at")
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in result.stderr
