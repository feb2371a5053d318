"""``sona footage export-training``: tracks written as identities that ``sona train`` loads,
with their times in tracks.json; bad input refused with one line, changing nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.adapt_support import exported_clip, refused, sona
from tests.footage_support import write_det, write_video
from training.datasets import load_dataset


def test_tracks_become_identities_in_the_custom_layout(tmp_path: Path) -> None:
    out = exported_clip(tmp_path)
    data = load_dataset("custom", out)
    assert data.num_train_pids == 2  # the two walkers, one identity each
    assert len(data.train) == 12
    tracks = json.loads((out / "tracks.json").read_text())
    assert tracks["cameras"]["1"]["name"] == "lobby"
    for name, track in tracks["tracks"].items():
        files = [c["file"] for c in track["crops"]]
        assert all(f.startswith(f"{name}/{name}_c1s1_") for f in files)
        assert all((out / f).is_file() for f in files)
        seconds = [c["seconds"] for c in track["crops"]]
        assert seconds == sorted(seconds) and track["first"] == seconds[0]
        assert track["last"] - track["first"] > 1.0  # spread over the walk, not one moment


def test_a_second_camera_adds_tracks_and_a_repeated_one_is_refused(tmp_path: Path) -> None:
    out = exported_clip(tmp_path)
    before = (out / "tracks.json").read_text()
    again = sona(
        "footage", "export-training", str(tmp_path / "lobby.avi"), "--output", str(out),
        "--camera", "lobby", "--detections", str(tmp_path / "lobby.txt"), "--quiet",
    )  # fmt: skip
    refused(again, "already in")
    assert (out / "tracks.json").read_text() == before
    video = write_video(tmp_path / "door.avi", frames=30)
    det = write_det(tmp_path / "door.txt", frames=30)
    result = sona(
        "footage", "export-training", str(video), "--output", str(out), "--camera", "door",
        "--detections", str(det), "--crops-per-track", "3", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tracks = json.loads((out / "tracks.json").read_text())
    assert sorted(tracks["tracks"]) == ["0001", "0002", "0003", "0004"]
    assert {t["camera"] for t in tracks["tracks"].values()} == {1, 2}
    data = load_dataset("custom", out)
    assert data.num_train_pids == 4 and data.num_train_cams == 2


def test_footage_without_a_usable_crop_writes_nothing(tmp_path: Path) -> None:
    video = write_video(tmp_path / "small.avi", frames=10)
    det = tmp_path / "det.txt"  # one walker, too small to be a crop (under --min-height)
    det.write_text("".join(f"{i + 1},-1,{20 + 6 * i},20,20,40,0.9,-1,-1,-1\n" for i in range(10)))
    result = sona(
        "footage", "export-training", str(video), "--output", str(tmp_path / "set"),
        "--camera", "c", "--min-motion", "0", "--detections", str(det), "--quiet",
    )  # fmt: skip
    refused(result, "nothing written")
    assert not (tmp_path / "set" / "tracks.json").exists()


def test_export_takes_footage_adds_detector_options(tmp_path: Path) -> None:
    """The detector options are those of ``sona footage add``: same syntax, same refusals."""
    video = write_video(tmp_path / "v.avi", frames=10)
    out = tmp_path / "set"
    for option, text in (
        ("--detector=torchvision:no_such_net", "torchvision has no such COCO detector"),
        ("--detector=yolo", "hog or torchvision:NAME"),
        ("--detect-every=0", "--detect-every must be at least 1"),
        ("--sweep-every=-1", "--sweep-every must be >= 0"),
    ):
        result = sona(
            "footage", "export-training", str(video), "--output", str(out), "--camera", "c",
            option, "--quiet",
        )  # fmt: skip
        refused(result, text)
        assert not out.exists()
